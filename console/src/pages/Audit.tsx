// The audit log: who did what, when. Action and resource prefix filter
// on the server (GET /audit?action=&resource=), so a page holds that many
// matching entries; the actor filter narrows the page shown.
import { useEffect, useState } from "react";
import { get, when } from "../api";
import { Alert, Empty, Loading, useLoad, Head } from "../ui";

interface Entry {
  id: string;
  seq: number;
  at: string;
  actor: string;
  action: string;
  resource: string;
  detail: unknown;
}

export function Audit() {
  const [before, setBefore] = useState<number | null>(null);
  const [action, setAction] = useState("");
  const [actor, setActor] = useState("");
  const [resource, setResource] = useState("");
  const query = new URLSearchParams({ limit: "500" });
  if (before) query.set("before", String(before));
  if (action) query.set("action", action);
  if (resource.trim()) query.set("resource", resource.trim());
  const log = useLoad(() => get<{ items: Entry[] }>(`/audit?${query}`), [query.toString()]);
  // Actions seen so far, so the choice does not shrink to the filtered one.
  const [known, setKnown] = useState<Set<string>>(new Set());
  useEffect(() => {
    const seen = (log.data?.items ?? []).map((e) => e.action).filter((a) => !known.has(a));
    if (seen.length) setKnown(new Set([...known, ...seen]));
  }, [log.data]);
  const items = (log.data?.items ?? []).filter((e) => !actor || e.actor.toLowerCase().includes(actor.toLowerCase()));
  const actions = [...known].sort();
  const oldest = log.data?.items.at(-1)?.seq;
  return (
    <section aria-labelledby="audit-title">
      <h1 id="audit-title">Audit log</h1>
      <div className="filters">
        <div className="field">
          <label htmlFor="audit-action">Action</label>
          <select
            id="audit-action"
            value={action}
            onChange={(e) => {
              setAction(e.target.value);
              setBefore(null);
            }}
          >
            <option value="">all</option>
            {actions.map((a) => (
              <option key={a}>{a}</option>
            ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor="audit-actor">Actor contains</label>
          <input id="audit-actor" value={actor} onChange={(e) => setActor(e.target.value)} />
        </div>
        <div className="field">
          <label htmlFor="audit-resource">Resource starts with</label>
          <input
            id="audit-resource"
            placeholder="proxies/chat"
            value={resource}
            onChange={(e) => {
              setResource(e.target.value);
              setBefore(null);
            }}
          />
        </div>
      </div>
      <Alert error={log.error} />
      {!log.data && !log.error ? <Loading what="the audit log" /> : null}
      {log.data && items.length === 0 ? <Empty>No entry matches.</Empty> : null}
      {items.length ? (
        <table>
          <Head cols={["When", "Actor", "Action", "Resource", "Detail"]} />
          <tbody>
            {items.map((e) => (
              <tr key={e.id}>
                <td>{when(e.at)}</td>
                <td>{e.actor}</td>
                <td>
                  <code>{e.action}</code>
                </td>
                <td>{e.resource}</td>
                <td>{e.detail ? <code className="detail">{JSON.stringify(e.detail)}</code> : null}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      <div className="buttons">
        {before ? (
          <button type="button" onClick={() => setBefore(null)}>
            Newest
          </button>
        ) : null}
        {log.data && log.data.items.length === 500 && oldest ? (
          <button type="button" onClick={() => setBefore(oldest)}>
            Older
          </button>
        ) : null}
      </div>
    </section>
  );
}
