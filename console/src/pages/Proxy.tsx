// A proxy's page: a sidebar of sections like the consoles it replaces
// (Overview, Develop > Routes/Policies, Keys, Deploy, Revisions, Test >
// Get Started), each one of admin's REST resources under the proxy.
import { useState } from "react";
import { ApiError, del, get, patch, when } from "../api";
import { go, href } from "../router";
import { Alert, Checks, Field, Loading, Status, Tabs, errorFor, toApiError, useLoad, Head } from "../ui";
import { Proxy, proxyPath, useProxyEnums } from "./Proxies";
import { Routes } from "./Routes";
import { Attachments } from "./Attachments";
import { Keys } from "./Keys";
import { Plans } from "./Plans";
import { Deploy } from "./Deploy";
import { GetStarted } from "./GetStarted";

const TABS: [string, string][] = [
  ["overview", "Overview"],
  ["routes", "Routes"],
  ["policies", "Policies"],
  ["keys", "Keys"],
  ["plans", "Plans"],
  ["deploy", "Deploy"],
  ["revisions", "Revisions"],
  ["get-started", "Get Started"],
];

export function ProxyPage({ id, tab }: { id: string; tab: string }) {
  const proxy = useLoad(() => get<Proxy>(proxyPath(id)), [id]);
  if (proxy.error) return <Alert error={proxy.error} />;
  if (!proxy.data) return <Loading what="the proxy" />;
  const p = proxy.data;
  let body;
  switch (tab) {
    case "routes":
      body = <Routes proxy={p} onSaved={proxy.setData} />;
      break;
    case "policies":
      body = <Attachments proxy={p} onChanged={proxy.reload} />;
      break;
    case "keys":
      body = <Keys proxy={p} />;
      break;
    case "plans":
      body = <Plans proxy={p} />;
      break;
    case "deploy":
      body = <Deploy proxy={p} onChanged={proxy.reload} />;
      break;
    case "revisions":
      body = <Revisions proxy={p} />;
      break;
    case "get-started":
      body = <GetStarted proxy={p} />;
      break;
    default:
      body = <Overview proxy={p} onSaved={proxy.setData} />;
  }
  return (
    <section aria-labelledby="proxy-title">
      <p className="crumbs">
        <a href="#/proxies">Proxies</a> / {p.name}
      </p>
      <div className="page-head">
        <h1 id="proxy-title">{p.name}</h1>
        <span className="muted">
          {p.version} · revision {p.revision} · <code>{p.context}</code>
        </span>
      </div>
      <Tabs tabs={TABS} current={TABS.some(([t]) => t === tab) ? tab : "overview"} base={href("proxies", p.id)} />
      <div className="tab-body">{body}</div>
    </section>
  );
}

function Overview({ proxy, onSaved }: { proxy: Proxy; onSaved: (p: Proxy) => void }) {
  const [version, setVersion] = useState(proxy.version);
  const [description, setDescription] = useState(proxy.description ?? "");
  const [context, setContext] = useState(proxy.context);
  const [inbound, setInbound] = useState(proxy.inbound);
  const [resources, setResources] = useState(proxy.resources);
  const enums = useProxyEnums();
  const [error, setError] = useState<ApiError | null>(null);
  const [saved, setSaved] = useState(false);
  const save = async (e: React.FormEvent) => {
    e.preventDefault();
    try {
      const p = await patch<Proxy>(proxyPath(proxy.id), {
        version,
        context,
        inbound,
        resources,
        description: description.trim() ? description : null,
      });
      setError(null);
      setSaved(true);
      onSaved(p);
    } catch (err) {
      setError(toApiError(err));
    }
  };
  const remove = async () => {
    if (!confirm(`Delete proxy ${proxy.name}? Stop its deployments first.`)) return;
    try {
      await del(proxyPath(proxy.id));
      go("proxies");
    } catch (err) {
      setError(toApiError(err));
    }
  };
  return (
    <div className="two-col">
      <div className="panel">
        <h2>Overview</h2>
        <dl className="review">
          <dt>Id</dt>
          <dd>
            <code>{proxy.id}</code>
          </dd>
          <dt>Provider</dt>
          <dd>{proxy.provider}</dd>
          <dt>Inbound formats</dt>
          <dd>{proxy.inbound.join(", ")}</dd>
          <dt>Resources</dt>
          <dd>{proxy.resources.join(", ")}</dd>
          <dt>Routing</dt>
          <dd>{proxy.routing?.strategy ?? (proxy.routes.length > 1 ? "?" : "single route")}</dd>
          <dt>Policies</dt>
          <dd>{proxy.policies.length ? proxy.policies.map((a) => `${a.name}@${a.version}`).join(", ") : "none"}</dd>
          <dt>Owner</dt>
          <dd>{proxy.owner ? (proxy.owner.team ? `team ${proxy.owner.team}` : `token ${proxy.owner.token}`) : "admins only"}</dd>
          <dt>Deployed</dt>
          <dd>
            {proxy.deployed_gateways.length
              ? proxy.deployed_gateways.map((g) => (
                  <div key={g.gateway_id}>
                    <Status value="Active" /> {g.gateway}, revision {g.revision}: <code>{g.invoke_url}</code>
                  </div>
                ))
              : "not deployed"}
          </dd>
        </dl>
      </div>
      <form className="panel" onSubmit={save}>
        <h2>Details</h2>
        <Field label="Version" value={version} onChange={setVersion} error={errorFor(error, "version")} />
        <Field label="Context (base path)" value={context} onChange={setContext} error={errorFor(error, "context")} />
        <Field label="Description" value={description} onChange={setDescription} multiline error={errorFor(error, "description")} />
        <Checks legend="Inbound formats" options={enums.inbound} value={inbound} onChange={setInbound} error={errorFor(error, "inbound")} />
        <Checks legend="Resources" options={enums.resources} value={resources} onChange={setResources} error={errorFor(error, "resources")} />
        <Alert error={error} shown={["version", "context", "description", "inbound", "resources"]} />
        {saved && !error ? <p role="status">Saved as revision {proxy.revision}. Deploy it to put it live.</p> : null}
        <div className="buttons">
          <button type="submit" className="primary">
            Save
          </button>
          <button type="button" className="danger" onClick={remove}>
            Delete proxy
          </button>
        </div>
      </form>
    </div>
  );
}

function Revisions({ proxy }: { proxy: Proxy }) {
  const revs = useLoad(() => get<{ items: { revision: number; current: boolean; created_at: string; created_by: string; spec: any }[] }>(`${proxyPath(proxy.id)}/revisions`), [proxy.id, proxy.revision]);
  const [open, setOpen] = useState<number | null>(null);
  if (revs.error) return <Alert error={revs.error} />;
  if (!revs.data) return <Loading what="revisions" />;
  const deployed = new Map(proxy.deployed_gateways.map((g) => [g.revision, g.gateway]));
  return (
    <div className="panel">
      <h2>Revisions</h2>
      <p className="muted">Every change is a new immutable revision; a deployment pins one. Deploy an earlier one from the Deploy tab to roll back.</p>
      <table>
        <Head cols={["Revision", "When", "By", "Deployed", "Spec"]} />
        <tbody>
          {revs.data.items.map((r) => (
            <tr key={r.revision}>
              <td>
                {r.revision} {r.current ? <span className="badge ok">current</span> : null}
              </td>
              <td>{when(r.created_at)}</td>
              <td>{r.created_by}</td>
              <td>{deployed.get(r.revision) ?? ""}</td>
              <td>
                <button type="button" className="small" aria-expanded={open === r.revision} onClick={() => setOpen(open === r.revision ? null : r.revision)}>
                  {open === r.revision ? "Hide" : "Show"}
                </button>
                {open === r.revision ? <pre className="json">{JSON.stringify(r.spec, null, 2)}</pre> : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
