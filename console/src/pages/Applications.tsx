// Consumers > Applications: the apps that call proxies with their own
// keys, under a plan of each proxy they subscribe to (docs/cost.md
// "Applications, plans and subscriptions"). An application belongs to
// whoever made it (a team or a token); a developer sees only its own.
import { useEffect, useMemo, useState } from "react";
import { ApiError, del, enc, get, post, when } from "../api";
import { go, href } from "../router";
import { Alert, Empty, Field, FormButtons, Head, Loading, Select, errorFor, toApiError, useLoad } from "../ui";
import { useMe, isAdmin } from "../App";
import { Proxy } from "./Proxies";
import { KeyManager } from "./Keys";
import { Plan, planSummary } from "./Plans";

export interface Application {
  id: string;
  name: string;
  description: string | null;
  owner: { team: string | null; token: string | null } | null;
  created_at: string;
}

export interface Subscription {
  id: string;
  application_id: string;
  proxy_id: string;
  plan_id: string;
  status: "pending" | "active" | "suspended" | "closed";
  created_at: string;
  updated_at: string;
}

const appPath = (id: string) => `/applications/${enc(id)}`;
export const ownerText = (o: Application["owner"]) => (o ? (o.team ? `team ${o.team}` : `token ${o.token}`) : "admins only");

export function Applications() {
  const list = useLoad(() => get<{ items: Application[] }>("/applications"), []);
  const [creating, setCreating] = useState(false);
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [error, setError] = useState<ApiError | null>(null);
  const create = async (e: React.FormEvent) => {
    e.preventDefault();
    try {
      const a = await post<Application>("/applications", { name: name.trim(), description: description.trim() || null });
      go("applications", a.id);
    } catch (err) {
      setError(toApiError(err));
    }
  };
  return (
    <section aria-labelledby="apps-title">
      <div className="page-head">
        <h1 id="apps-title">Applications</h1>
        {!creating ? (
          <button type="button" className="primary" onClick={() => setCreating(true)}>
            Create application
          </button>
        ) : null}
      </div>
      <p className="muted">
        An application calls proxies with its own keys, under a plan of each proxy it subscribes to; its keys work only where it is actively subscribed.
      </p>
      {creating ? (
        <form className="panel" onSubmit={create} aria-labelledby="new-app-title">
          <h2 id="new-app-title">New application</h2>
          <Field label="Name" value={name} onChange={setName} required error={errorFor(error, "name")} />
          <Field label="Description" value={description} onChange={setDescription} multiline error={errorFor(error, "description")} />
          <Alert error={error} shown={["name", "description"]} />
          <FormButtons submit="Create application" disabled={!name.trim()} onCancel={() => { setCreating(false); setError(null); }} />
        </form>
      ) : null}
      <Alert error={list.error} />
      {!list.data && !list.error ? <Loading what="applications" /> : null}
      {list.data && list.data.items.length === 0 ? <Empty>No applications yet.</Empty> : null}
      {list.data && list.data.items.length ? (
        <table>
          <Head cols={["Name", "Id", "Description", "Owner", "Created"]} />
          <tbody>
            {list.data.items.map((a) => (
              <tr key={a.id}>
                <td>
                  <a href={href("applications", a.id)}>{a.name}</a>
                </td>
                <td>
                  <code>{a.id}</code>
                </td>
                <td>{a.description ?? ""}</td>
                <td>{ownerText(a.owner)}</td>
                <td>{when(a.created_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </section>
  );
}

export function ApplicationPage({ id }: { id: string }) {
  const app = useLoad(() => get<Application & { subscriptions: Subscription[] }>(appPath(id)), [id]);
  const [error, setError] = useState<ApiError | null>(null);
  if (app.error) return <Alert error={app.error} />;
  if (!app.data) return <Loading what="the application" />;
  const a = app.data;
  const remove = async () => {
    if (!confirm(`Delete application ${a.name}? Its subscriptions end and its keys stop working within seconds.`)) return;
    try {
      await del(appPath(a.id));
      go("applications");
    } catch (err) {
      setError(toApiError(err));
    }
  };
  return (
    <section aria-labelledby="app-title">
      <p className="crumbs">
        <a href="#/applications">Applications</a> / {a.name}
      </p>
      <div className="page-head">
        <h1 id="app-title">{a.name}</h1>
        <span className="muted">
          <code>{a.id}</code> · {ownerText(a.owner)} · created {when(a.created_at)}
        </span>
        <button type="button" className="danger" onClick={remove} style={{ marginLeft: "auto" }}>
          Delete application
        </button>
      </div>
      {a.description ? <p>{a.description}</p> : null}
      <Alert error={error} />
      <KeyManager path={`${appPath(a.id)}/keys`} note="It works on the proxies this application is actively subscribed to." />
      <Subscriptions app={a} subscriptions={a.subscriptions} onChanged={app.reload} />
    </section>
  );
}

/** What a caller may do to a subscription: the proxy's side (its owner or
 * an admin) approves, suspends and resumes; either side may close. */
export function transitions(s: Subscription, proxySide: boolean): string[] {
  const out: string[] = [];
  if (proxySide && s.status === "pending") out.push("approve");
  if (proxySide && s.status === "active") out.push("suspend");
  if (proxySide && s.status === "suspended") out.push("resume");
  if (s.status !== "closed") out.push("close");
  return out;
}

const VERB: Record<string, string> = { approve: "Approve", suspend: "Suspend", resume: "Resume", close: "Close" };

/** One action button; closing is final, so it asks first. */
export function TransitionButton({ sub, action, label, onDone, onError }: { sub: Subscription; action: string; label: string; onDone: () => void; onError: (e: ApiError) => void }) {
  const run = async () => {
    if (action === "close" && !confirm(`Close the subscription of ${sub.application_id} to ${sub.proxy_id}? This is final: its keys stop working there.`)) return;
    try {
      await post(`/subscriptions/${enc(sub.id)}/${action}`);
      onDone();
    } catch (err) {
      onError(toApiError(err));
    }
  };
  return (
    <button type="button" className={"small" + (action === "close" || action === "suspend" ? " danger" : "")} onClick={run} aria-label={`${VERB[action]} ${label}`}>
      {VERB[action]}
    </button>
  );
}

function Subscriptions({ app, subscriptions, onChanged }: { app: Application; subscriptions: Subscription[]; onChanged: () => void }) {
  const me = useMe();
  // The proxies the caller owns (or all, for an admin): there it is the
  // proxy's side and may approve, suspend and resume.
  const mine = useLoad(() => get<{ items: Proxy[] }>("/proxies"), []);
  const owned = useMemo(() => new Set((mine.data?.items ?? []).map((p) => p.id)), [mine.data]);
  // Plan names of the subscribed proxies' plans (a subscription names its plan by id).
  const proxyIds = [...new Set(subscriptions.map((s) => s.proxy_id))].sort();
  const plans = useLoad(
    async () => {
      const lists = await Promise.all(proxyIds.map((p) => get<{ items: Plan[] }>(`/proxies/${enc(p)}/plans`).catch(() => ({ items: [] as Plan[] }))));
      return new Map(lists.flatMap((l) => l.items.map((p) => [p.id, p] as [string, Plan])));
    },
    [proxyIds.join(",")],
  );
  const [error, setError] = useState<ApiError | null>(null);
  const open = subscriptions.filter((s) => s.status !== "closed");
  return (
    <div>
      <h2>Subscriptions</h2>
      <Subscribe app={app} proxies={mine.data?.items ?? []} taken={open.map((s) => s.proxy_id)} onDone={onChanged} />
      <Alert error={error} />
      {subscriptions.length === 0 ? <Empty>Not subscribed to any proxy yet: its keys work nowhere.</Empty> : null}
      {subscriptions.length ? (
        <table>
          <caption className="visually-hidden">Subscriptions of {app.name}</caption>
          <Head cols={["Proxy", "Plan", "Status", "Since", ""]} />
          <tbody>
            {subscriptions.map((s) => {
              const plan = plans.data?.get(s.plan_id);
              return (
                <tr key={s.id} data-testid={`subscription-${s.proxy_id}`}>
                  <td>{owned.has(s.proxy_id) ? <a href={href("proxies", s.proxy_id, "plans")}>{s.proxy_id}</a> : s.proxy_id}</td>
                  <td>
                    {plan ? plan.name : <code>{s.plan_id}</code>}
                    {plan ? <div className="muted small-print">{planSummary(plan)}</div> : null}
                  </td>
                  <td>
                    <SubStatus value={s.status} />
                  </td>
                  <td>{when(s.updated_at)}</td>
                  <td>
                    <div className="actions">
                      {transitions(s, isAdmin(me) || owned.has(s.proxy_id)).map((a) => (
                        <TransitionButton key={a} sub={s} action={a} label={`subscription to ${s.proxy_id}`} onDone={() => { setError(null); onChanged(); }} onError={setError} />
                      ))}
                    </div>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      ) : null}
    </div>
  );
}

/** pending waits for the proxy's owner; suspended can be resumed; closed is final. */
export function SubStatus({ value }: { value: Subscription["status"] }) {
  const cls = value === "active" ? "ok" : value === "suspended" ? "bad" : value === "pending" ? "warn" : "off";
  return <span className={"badge " + cls}>{value}</span>;
}

/** Subscribe: a proxy (any id: proxies of other owners are not listed to
 * a developer, but their plans are public), then one of its plans. */
function Subscribe({ app, proxies, taken, onDone }: { app: Application; proxies: Proxy[]; taken: string[]; onDone: () => void }) {
  const [proxy, setProxy] = useState("");
  const [wanted, setWanted] = useState("");
  const [plan, setPlan] = useState("");
  const [error, setError] = useState<ApiError | null>(null);
  // Ask for the plans once typing pauses, not on every keystroke.
  useEffect(() => {
    const t = setTimeout(() => setWanted(proxy.trim()), proxy.trim() ? 300 : 0);
    return () => clearTimeout(t);
  }, [proxy]);
  const plans = useLoad(async () => (wanted ? (await get<{ items: Plan[] }>(`/proxies/${enc(wanted)}/plans`)).items : []), [wanted]);
  useEffect(() => setPlan(plans.data?.[0]?.id ?? ""), [plans.data]);
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    try {
      await post(`${appPath(app.id)}/subscriptions`, { proxy: proxy.trim(), plan });
      setProxy("");
      setError(null);
      onDone();
    } catch (err) {
      setError(toApiError(err));
    }
  };
  const chosen = plans.data?.find((p) => p.id === plan);
  const listId = `proxies-for-${app.id}`;
  return (
    <form className="panel" onSubmit={submit} aria-labelledby="subscribe-title">
      <h3 id="subscribe-title">Subscribe to a proxy</h3>
      <div className="grid2">
        <div>
          <Field
            label="Proxy id"
            value={proxy}
            onChange={setProxy}
            list={listId}
            required
            error={errorFor(error, "proxy")}
            hint={taken.length ? `Already subscribed to ${taken.join(", ")} (one open subscription per proxy).` : "The id of the proxy, as its owner gave it to you."}
          />
          <datalist id={listId}>
            {proxies.map((p) => (
              <option key={p.id} value={p.id}>
                {p.name}
              </option>
            ))}
          </datalist>
        </div>
        {plans.data && plans.data.length ? (
          <Select
            label="Plan"
            value={plan}
            onChange={setPlan}
            options={plans.data.map((p) => [p.id, `${p.name}${p.needs_approval ? " (needs approval)" : ""}`] as [string, string])}
            error={errorFor(error, "plan")}
            hint={chosen ? planSummary(chosen) : undefined}
          />
        ) : (
          <p className="muted" role="status">
            {!wanted ? "Pick a proxy to see its plans." : plans.loading ? "Loading plans…" : "This proxy offers no plans (its owner makes them on its Plans tab)."}
          </p>
        )}
      </div>
      <Alert error={error} shown={["proxy", "plan"]} />
      <div className="buttons">
        <button type="submit" className="primary" disabled={!proxy.trim() || !plan}>
          Subscribe
        </button>
      </div>
    </form>
  );
}
