// Deploy: put the proxy's current revision (or an earlier one: a
// rollback) on a gateway, stop a deployment, the history with the latest
// marked, and what would change between a deployed revision and the
// current one.
import { useState } from "react";
import { ApiError, enc, get, post, when } from "../api";
import { Alert, Empty, Loading, Select, Status, errorFor, toApiError, useLoad, Head } from "../ui";
import { Proxy, proxyPath } from "./Proxies";

interface Deployment {
  id: string;
  gateway_id: string;
  gateway: string;
  revision: number;
  status: string;
  error: { field: string; message: string } | null;
  deployed_at: string;
  stopped_at: string | null;
  invoke_url: string;
  latest: boolean;
}

export function Deploy({ proxy, onChanged }: { proxy: Proxy; onChanged: () => void }) {
  const gateways = useLoad(() => get<{ items: { id: string; name: string; status: string }[] }>("/gateways"), []);
  const history = useLoad(() => get<{ items: Deployment[] }>(`${proxyPath(proxy.id)}/deployments`), [proxy.id]);
  const revisions = useLoad(
    () => get<{ items: { revision: number; spec: any }[] }>(`${proxyPath(proxy.id)}/revisions`),
    [proxy.id, proxy.revision],
  );
  const [gateway, setGateway] = useState("");
  const [revision, setRevision] = useState("");
  const [error, setError] = useState<ApiError | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const gw = gateway || gateways.data?.items[0]?.id || "";

  const refresh = () => {
    history.reload();
    onChanged();
  };
  const deploy = async (e: React.FormEvent) => {
    e.preventDefault();
    try {
      const body: Record<string, unknown> = { gateway: gw };
      if (revision) body.revision = Number(revision);
      const d = await post<Deployment>(`${proxyPath(proxy.id)}/deployments`, body);
      setError(null);
      setDone(`Revision ${d.revision} deployed to ${d.gateway}: ${d.invoke_url}`);
      refresh();
    } catch (err) {
      setDone(null);
      setError(toApiError(err));
    }
  };
  const stop = async (d: Deployment) => {
    try {
      await post(`${proxyPath(proxy.id)}/deployments/${enc(d.id)}/stop`);
      setError(null);
      setDone(`Stopped the deployment on ${d.gateway}.`);
      refresh();
    } catch (err) {
      setError(toApiError(err));
    }
  };

  const specs = new Map((revisions.data?.items ?? []).map((r) => [r.revision, r.spec]));
  return (
    <div>
      <form className="panel" onSubmit={deploy} aria-labelledby="deploy-title">
        <h2 id="deploy-title">Deploy</h2>
        <div className="grid2">
          <Select
            label="Gateway"
            value={gw}
            onChange={setGateway}
            options={(gateways.data?.items ?? []).map((g) => [g.id, `${g.name} (${g.status})`])}
            error={errorFor(error, "gateway", "context")}
          />
          <Select
            label="Revision"
            value={revision}
            onChange={setRevision}
            options={[["", `current (${proxy.revision})`], ...(revisions.data?.items ?? []).filter((r) => r.revision !== proxy.revision).map((r): [string, string] => [String(r.revision), `${r.revision} (rollback)`])]}
            error={errorFor(error, "revision")}
          />
        </div>
        <Alert error={error} shown={["gateway", "revision", "context"]} />
        {done ? <p role="status">{done}</p> : null}
        <div className="buttons">
          <button type="submit" className="primary" disabled={!gw}>
            Deploy
          </button>
        </div>
      </form>
      <h2>History</h2>
      {!history.data ? <Loading what="deployments" /> : null}
      {history.data && history.data.items.length === 0 ? <Empty>Never deployed.</Empty> : null}
      {history.data && history.data.items.length ? (
        <table>
          <Head cols={["Gateway", "Revision", "Status", "Deployed", "Invoke URL", ""]} />
          <tbody>
            {history.data.items.map((d) => (
              <tr key={d.id} data-deployment={d.id}>
                <td>
                  {d.gateway} {d.latest ? <span className="badge ok">latest</span> : null}
                </td>
                <td>{d.revision}</td>
                <td>
                  <Status value={d.status} />
                  {d.error ? (
                    <div className="error-text">
                      {d.error.field}: {d.error.message}
                    </div>
                  ) : null}
                </td>
                <td>
                  {when(d.deployed_at)}
                  {d.stopped_at ? <div className="muted">stopped {when(d.stopped_at)}</div> : null}
                </td>
                <td>
                  <code>{d.invoke_url}</code>
                </td>
                <td>
                  {d.status === "Active" || d.status === "Failed" ? (
                    <button type="button" className="small danger" onClick={() => stop(d)} aria-label={`Stop the deployment on ${d.gateway}`}>
                      Stop
                    </button>
                  ) : null}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      <h2>Changes since deployed</h2>
      {proxy.deployed_gateways.length === 0 ? <Empty>Not deployed anywhere.</Empty> : null}
      {proxy.deployed_gateways.map((g) => {
        const before = specs.get(g.revision);
        const after = specs.get(proxy.revision);
        const lines = before && after ? diff(before, after) : [];
        return (
          <div key={g.gateway_id} className="panel">
            <h3>
              {g.gateway}: revision {g.revision} → current {proxy.revision}
            </h3>
            {g.revision === proxy.revision ? (
              <p>The current revision is deployed here.</p>
            ) : lines.length ? (
              <ul className="diff" aria-label={`Changes on ${g.gateway}`}>
                {lines.map((l, i) => (
                  <li key={i} className={l.kind}>
                    <code>{l.path}</code>: {l.kind === "added" ? `added ${show(l.after)}` : l.kind === "removed" ? `removed (was ${show(l.before)})` : `${show(l.before)} → ${show(l.after)}`}
                  </li>
                ))}
              </ul>
            ) : (
              <p className="muted">No difference in the proxy's settings.</p>
            )}
          </div>
        );
      })}
    </div>
  );
}

const show = (v: unknown) => JSON.stringify(v);

type Line = { path: string; kind: "added" | "removed" | "changed"; before?: unknown; after?: unknown };

/** Leaf-level differences between two JSON values, by path. */
export function diff(a: unknown, b: unknown, path = ""): Line[] {
  const isObj = (v: unknown) => v !== null && typeof v === "object";
  if (isObj(a) && isObj(b) && Array.isArray(a) === Array.isArray(b)) {
    const keys = new Set([...Object.keys(a as object), ...Object.keys(b as object)]);
    const out: Line[] = [];
    for (const k of keys) {
      const p = Array.isArray(a) ? `${path}[${k}]` : path ? `${path}.${k}` : k;
      const av = (a as any)[k];
      const bv = (b as any)[k];
      if (av === undefined) out.push({ path: p, kind: "added", after: bv });
      else if (bv === undefined) out.push({ path: p, kind: "removed", before: av });
      else out.push(...diff(av, bv, p));
    }
    return out;
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [{ path: path || "(whole)", kind: "changed", before: a, after: b }];
}
