// Proxy > Plans: what applications may subscribe to (models, formats,
// resources, request and token quotas, budgets, whether the owner
// approves each subscription), and the subscriptions of this proxy with
// the owner's approve / suspend / resume. Quotas and budgets are enforced
// by the token-rate-limit and budget policies admin attaches per plan, so
// admin checks them against those policies' schemas: its 422 names the
// row (`limits[0].limit`), shown on that row's input.
import { useState } from "react";
import { ApiError, del, enc, get, patch, post, when } from "../api";
import { Alert, Checks, Empty, Field, FormButtons, Head, Loading, Select, errorFor, toApiError, useLoad } from "../ui";
import { Proxy, proxyPath } from "./Proxies";
import { Subscription, SubStatus, TransitionButton, transitions } from "./Applications";

export interface Limit {
  metric: string;
  limit: number;
  window: string;
}
export interface Budget {
  amount: number;
  period: string;
}
export interface Plan {
  id: string;
  proxy_id: string;
  name: string;
  models: string[];
  inbound: string[];
  resources: string[];
  needs_approval: boolean;
  limits: Limit[];
  budgets: Budget[];
  created_at: string;
}

/** token-rate-limit's metrics (docs/cost.md). */
const METRICS = ["requests", "total_tokens", "prompt_tokens", "completion_tokens"];

const quota = (l: Limit) => `${l.metric.replace("_", " ")}: ${l.limit} / ${l.window}`;
const budget = (b: Budget, currency = "") => `${b.amount}${currency ? " " + currency : ""} / ${b.period}`;

/** One line saying what a plan allows, for pickers and subscription rows. */
export function planSummary(p: Plan): string {
  const parts = [p.models.length ? p.models.join(", ") : "all models"];
  parts.push(...p.limits.map(quota), ...p.budgets.map((b) => budget(b)));
  if (p.needs_approval) parts.push("needs approval");
  return parts.join(" · ");
}

export function Plans({ proxy }: { proxy: Proxy }) {
  const base = `${proxyPath(proxy.id)}/plans`;
  const plans = useLoad(() => get<{ items: Plan[] }>(base), [proxy.id]);
  const subs = useLoad(() => get<{ items: Subscription[] }>(`${proxyPath(proxy.id)}/subscriptions`), [proxy.id]);
  // null: no form; "new": creating; a plan: editing it.
  const [editing, setEditing] = useState<Plan | "new" | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const remove = async (p: Plan) => {
    if (!confirm(`Delete plan ${p.name}?`)) return;
    try {
      await del(`${base}/${enc(p.id)}`);
      setError(null);
      plans.reload();
    } catch (err) {
      setError(toApiError(err));
    }
  };
  const names = new Map((plans.data?.items ?? []).map((p) => [p.id, p.name]));
  const pending = (subs.data?.items ?? []).filter((s) => s.status === "pending").length;
  return (
    <div>
      <div className="page-head">
        <h2>Plans</h2>
        {editing === null ? (
          <button type="button" className="primary" onClick={() => { setError(null); setEditing("new"); }}>
            Create plan
          </button>
        ) : null}
      </div>
      <p className="muted">
        Applications subscribe to this proxy under a plan; their keys then work here with the plan's models, formats and resources, within its quotas
        and budgets. Changes reach the gateways within seconds, without a deployment.
      </p>
      {editing !== null ? (
        <PlanForm
          key={editing === "new" ? "new" : editing.id}
          proxy={proxy}
          plan={editing === "new" ? null : editing}
          onDone={() => {
            setEditing(null);
            plans.reload();
          }}
          onCancel={() => setEditing(null)}
        />
      ) : null}
      {error ? (
        <div className="alert" role="alert">
          <strong>
            {error.status} {error.code}
          </strong>
          : {error.message}
          {error.status === 409 ? (
            <div>A plan cannot be deleted while applications subscribe under it: close those subscriptions below (or ask their owners to), then delete it.</div>
          ) : null}
        </div>
      ) : null}
      <Alert error={plans.error} />
      {!plans.data && !plans.error ? <Loading what="plans" /> : null}
      {plans.data && plans.data.items.length === 0 ? <Empty>No plans yet: applications cannot subscribe to this proxy.</Empty> : null}
      {plans.data && plans.data.items.length ? (
        <table>
          <caption className="visually-hidden">Plans of {proxy.name}</caption>
          <Head cols={["Name", "Models", "Formats", "Resources", "Quotas", "Budgets", "Approval", ""]} />
          <tbody>
            {plans.data.items.map((p) => (
              <tr key={p.id} data-testid={`plan-${p.name}`}>
                <td>{p.name}</td>
                <td>{p.models.length ? p.models.map((m) => <code key={m}>{m} </code>) : "all"}</td>
                <td>{p.inbound.length ? p.inbound.join(", ") : "all"}</td>
                <td>{p.resources.length ? p.resources.join(", ") : "all"}</td>
                <td>{p.limits.length ? p.limits.map((l, i) => <div key={i}>{quota(l)}</div>) : "none"}</td>
                <td>{p.budgets.length ? p.budgets.map((b, i) => <div key={i}>{budget(b)}</div>) : "none"}</td>
                <td>{p.needs_approval ? "needed" : "automatic"}</td>
                <td>
                  <div className="actions">
                    <button type="button" className="small" onClick={() => { setError(null); setEditing(p); }} aria-label={`Edit plan ${p.name}`}>
                      Edit
                    </button>
                    <button type="button" className="small danger" onClick={() => remove(p)} aria-label={`Delete plan ${p.name}`}>
                      Delete
                    </button>
                  </div>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}

      <h2>Subscriptions {pending ? <span className="badge warn">{pending} pending</span> : null}</h2>
      <ProxySubscriptions subs={subs} planName={(id) => names.get(id) ?? id} />
    </div>
  );
}

function ProxySubscriptions({ subs, planName }: { subs: ReturnType<typeof useLoad<{ items: Subscription[] }>>; planName: (id: string) => string }) {
  const [error, setError] = useState<ApiError | null>(null);
  if (subs.error) return <Alert error={subs.error} />;
  if (!subs.data) return <Loading what="subscriptions" />;
  if (!subs.data.items.length) return <Empty>No application subscribes to this proxy yet.</Empty>;
  return (
    <>
      <Alert error={error} />
      <table>
        <caption className="visually-hidden">Subscriptions to this proxy</caption>
        <Head cols={["Application", "Plan", "Status", "Since", ""]} />
        <tbody>
          {subs.data.items.map((s) => (
            <tr key={s.id} data-testid={`proxy-subscription-${s.application_id}`}>
              <td>
                <code>{s.application_id}</code>
              </td>
              <td>{planName(s.plan_id)}</td>
              <td>
                <SubStatus value={s.status} />
              </td>
              <td>{when(s.updated_at)}</td>
              <td>
                <div className="actions">
                  {/* Whoever sees this tab owns the proxy or is an admin: the proxy's side. */}
                  {transitions(s, true).map((a) => (
                    <TransitionButton
                      key={a}
                      sub={s}
                      action={a}
                      label={`subscription of ${s.application_id}`}
                      onDone={() => {
                        setError(null);
                        subs.reload();
                      }}
                      onError={setError}
                    />
                  ))}
                </div>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}

/** Rows are edited as text (an empty or half-typed number stays as typed);
 * numbers are sent as numbers when they parse, as typed otherwise, so
 * admin's schema check names the row. */
interface LimitRow {
  metric: string;
  limit: string;
  window: string;
}
interface BudgetRow {
  amount: string;
  period: string;
}
const num = (s: string): number | string => (s.trim() !== "" && !isNaN(Number(s)) ? Number(s) : s);

function PlanForm({ proxy, plan, onDone, onCancel }: { proxy: Proxy; plan: Plan | null; onDone: () => void; onCancel: () => void }) {
  const [name, setName] = useState(plan?.name ?? "");
  const [models, setModels] = useState((plan?.models ?? []).join("\n"));
  const [inbound, setInbound] = useState<string[]>(plan?.inbound ?? []);
  const [resources, setResources] = useState<string[]>(plan?.resources ?? []);
  const [approval, setApproval] = useState(plan?.needs_approval ?? false);
  const [limits, setLimits] = useState<LimitRow[]>((plan?.limits ?? []).map((l) => ({ metric: l.metric, limit: String(l.limit), window: l.window })));
  const [budgets, setBudgets] = useState<BudgetRow[]>((plan?.budgets ?? []).map((b) => ({ amount: String(b.amount), period: b.period })));
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const setLimit = (i: number, r: Partial<LimitRow>) => setLimits(limits.map((x, j) => (j === i ? { ...x, ...r } : x)));
  const setBudget = (i: number, r: Partial<BudgetRow>) => setBudgets(budgets.map((x, j) => (j === i ? { ...x, ...r } : x)));
  // Removing a row moves the rows after it: an error naming a row by its
  // index would land on the wrong one, so it goes.
  const removeLimit = (i: number) => {
    setLimits(limits.filter((_, j) => j !== i));
    setError(null);
  };
  const removeBudget = (i: number) => {
    setBudgets(budgets.filter((_, j) => j !== i));
    setError(null);
  };
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    const body = {
      models: models
        .split(/[\n,]/)
        .map((m) => m.trim())
        .filter(Boolean),
      inbound,
      resources,
      needs_approval: approval,
      limits: limits.map((l) => ({ metric: l.metric, limit: num(l.limit), window: l.window.trim() })),
      budgets: budgets.map((b) => ({ amount: num(b.amount), period: b.period.trim() })),
    };
    setBusy(true);
    try {
      if (plan) await patch(`${proxyPath(proxy.id)}/plans/${enc(plan.id)}`, body);
      else await post(`${proxyPath(proxy.id)}/plans`, { name: name.trim(), ...body });
      setError(null);
      onDone();
    } catch (err) {
      setError(toApiError(err));
    } finally {
      setBusy(false);
    }
  };
  // A field admin named exactly (not something inside it).
  const exactly = (f: string) => (error?.field === f ? error.message : undefined);
  // Every field the form shows an error on; anything else goes in the alert.
  const shown = [
    "name", "models", "inbound", "resources",
    ...limits.flatMap((_, i) => [`limits[${i}].metric`, `limits[${i}].limit`, `limits[${i}].window`, `limits[${i}]`]),
    ...budgets.flatMap((_, i) => [`budgets[${i}].amount`, `budgets[${i}].period`, `budgets[${i}]`]),
  ];
  if (exactly("limits")) shown.push("limits");
  if (exactly("budgets")) shown.push("budgets");
  return (
    <form className="panel plan-rows" onSubmit={submit} aria-labelledby="plan-form-title">
      <h3 id="plan-form-title">{plan ? `Edit plan ${plan.name}` : "New plan"}</h3>
      {plan ? null : <Field label="Plan name" value={name} onChange={setName} required error={errorFor(error, "name")} />}
      <Field
        label="Models"
        value={models}
        onChange={setModels}
        multiline
        error={errorFor(error, "models")}
        hint="One per line or comma-separated; * matches any run of characters (gpt-5*). Empty: every model of the proxy."
      />
      <div className="grid2">
        <Checks legend="Inbound formats (none ticked: all the proxy serves)" options={proxy.inbound} value={inbound} onChange={setInbound} error={errorFor(error, "inbound")} />
        <Checks legend="Resources (none ticked: all the proxy offers)" options={proxy.resources} value={resources} onChange={setResources} error={errorFor(error, "resources")} />
      </div>
      <label className="check">
        <input type="checkbox" checked={approval} onChange={(e) => setApproval(e.target.checked)} /> Subscriptions need my approval
      </label>

      <fieldset>
        <legend>Quotas per subscription</legend>
        {limits.map((l, i) => (
          <fieldset key={i} className="plan-row" data-testid={`limit-row-${i}`}>
            <legend className="visually-hidden">Quota {i + 1}</legend>
            <Select label="Metric" value={l.metric} onChange={(v) => setLimit(i, { metric: v })} options={METRICS} error={errorFor(error, `limits[${i}].metric`)} />
            <Field label="Limit" type="number" value={l.limit} onChange={(v) => setLimit(i, { limit: v })} required error={errorFor(error, `limits[${i}].limit`) ?? exactly(`limits[${i}]`)} />
            <Field label="Window" value={l.window} onChange={(v) => setLimit(i, { window: v })} required error={errorFor(error, `limits[${i}].window`)} hint="minute, hour, day, month, or 10s, 5m, 2h, 7d" />
            <button type="button" className="small danger" onClick={() => removeLimit(i)} aria-label={`Remove quota ${i + 1}`}>
              Remove
            </button>
          </fieldset>
        ))}
        {exactly("limits") ? (
          <div className="error-text" role="alert">
            {exactly("limits")}
          </div>
        ) : null}
        <button type="button" className="small" onClick={() => setLimits([...limits, { metric: "requests", limit: "", window: "hour" }])}>
          Add quota
        </button>
      </fieldset>

      <fieldset>
        <legend>Budgets per subscription</legend>
        {budgets.map((b, i) => (
          <fieldset key={i} className="plan-row" data-testid={`budget-row-${i}`}>
            <legend className="visually-hidden">Budget {i + 1}</legend>
            <Field label="Amount" type="number" value={b.amount} onChange={(v) => setBudget(i, { amount: v })} required error={errorFor(error, `budgets[${i}].amount`) ?? exactly(`budgets[${i}]`)} hint="In the providers' price currency" />
            <Field label="Period" value={b.period} onChange={(v) => setBudget(i, { period: v })} required error={errorFor(error, `budgets[${i}].period`)} hint="minute, hour, day, month, or 7d" />
            <button type="button" className="small danger" onClick={() => removeBudget(i)} aria-label={`Remove budget ${i + 1}`}>
              Remove
            </button>
          </fieldset>
        ))}
        {exactly("budgets") ? (
          <div className="error-text" role="alert">
            {exactly("budgets")}
          </div>
        ) : null}
        <button type="button" className="small" onClick={() => setBudgets([...budgets, { amount: "", period: "month" }])}>
          Add budget
        </button>
      </fieldset>

      <Alert error={error} shown={shown} />
      <FormButtons submit={busy ? "Saving…" : plan ? "Save plan" : "Create plan"} disabled={busy || (!plan && !name.trim())} onCancel={onCancel} />
    </form>
  );
}
