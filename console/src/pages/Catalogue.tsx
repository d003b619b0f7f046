// The policy hub's catalogue, through admin: search, filter by category,
// each policy's versions and docs, and attaching it to a proxy.
import { useEffect, useMemo, useState } from "react";
import { enc, get } from "../api";
import { renderMarkdown } from "../markdown";
import { href } from "../router";
import { Alert, Empty, Loading, Select, toApiError, useLoad } from "../ui";
import { CatalogueItem, Manifest } from "./Attachments";
import { ApiError } from "../api";

export function Catalogue({ name }: { name?: string }) {
  const list = useLoad(() => get<{ items: CatalogueItem[] }>("/policies"), []);
  const [q, setQ] = useState("");
  const [category, setCategory] = useState("");
  const categories = [...new Set((list.data?.items ?? []).map((p) => p.category))].sort();
  const items = useMemo(
    () =>
      (list.data?.items ?? []).filter(
        (p) =>
          (!category || p.category === category) &&
          (!q.trim() || `${p.name} ${p.display_name} ${p.description}`.toLowerCase().includes(q.trim().toLowerCase())),
      ),
    [list.data, q, category],
  );
  if (name) return <PolicyDetail name={name} />;
  return (
    <section aria-labelledby="hub-title">
      <h1 id="hub-title">Policy hub</h1>
      <div className="filters">
        <div className="search">
          <label htmlFor="policy-search" className="visually-hidden">
            Search policies
          </label>
          <input id="policy-search" type="search" placeholder="Search policies…" value={q} onChange={(e) => setQ(e.target.value)} />
        </div>
        <Select label="Category" value={category} onChange={setCategory} options={[["", "all"], ...categories.map((c): [string, string] => [c, c])]} />
      </div>
      <Alert error={list.error} />
      {!list.data && !list.error ? <Loading what="the catalogue" /> : null}
      {list.data && items.length === 0 ? <Empty>No policy matches.</Empty> : null}
      <div className="cards">
        {items.map((p) => (
          <article key={p.name} className="card">
            <h2>
              <a href={href("policies", p.name)}>{p.display_name || p.name}</a>
            </h2>
            <p className="muted">
              {p.category} · {p.version} · {p.phases.join(", ")}
            </p>
            <p>{p.description}</p>
          </article>
        ))}
      </div>
    </section>
  );
}

function PolicyDetail({ name }: { name: string }) {
  const policy = useLoad(() => get<{ latest_version: string; versions: { version: string; published_at: string; yanked: boolean }[] }>(`/policies/${enc(name)}`), [name]);
  const proxies = useLoad(() => get<{ items: { id: string; name: string }[] }>("/proxies"), []);
  const [version, setVersion] = useState("");
  const [manifest, setManifest] = useState<Manifest | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [target, setTarget] = useState("");
  const v = version || policy.data?.latest_version || "";
  useEffect(() => {
    if (!v) return;
    get<Manifest>(`/policies/${enc(name)}/versions/${enc(v)}`)
      .then(setManifest)
      .catch((e) => setError(toApiError(e)));
  }, [name, v]);
  const proxy = target || proxies.data?.items[0]?.id || "";
  return (
    <section aria-labelledby="policy-title">
      <p className="crumbs">
        <a href="#/policies">Policy hub</a> / {name}
      </p>
      <h1 id="policy-title">{manifest?.display_name || name}</h1>
      <Alert error={policy.error ?? error} />
      <div className="grid2">
        <Select label="Version" value={v} onChange={setVersion} options={(policy.data?.versions ?? []).map((x) => [x.version, `${x.version}${x.yanked ? " (yanked)" : ""} · ${new Date(x.published_at).toLocaleDateString()}`])} />
        <div className="attach-to">
          <Select label="Attach to proxy" value={proxy} onChange={setTarget} options={(proxies.data?.items ?? []).map((p) => [p.id, p.name])} />
          <button type="button" className="primary" disabled={!proxy} onClick={() => (location.hash = `${href("proxies", proxy, "policies")}?attach=${enc(name)}`)}>
            Attach…
          </button>
        </div>
      </div>
      {manifest ? (
        <>
          <p className="muted">
            {manifest.category} · phases {manifest.phases.join(", ")} · module sha256 <code>{manifest.sha256.slice(0, 16)}…</code>
          </p>
          <div className="docs panel" dangerouslySetInnerHTML={{ __html: renderMarkdown(manifest.docs || manifest.description) }} />
          <details className="panel">
            <summary>Settings schema</summary>
            <pre className="json">{JSON.stringify(manifest.settings_schema, null, 2)}</pre>
          </details>
          <details className="panel">
            <summary>Defaults</summary>
            <pre className="json">{JSON.stringify(manifest.defaults, null, 2)}</pre>
          </details>
        </>
      ) : (
        <Loading what="the policy" />
      )}
    </section>
  );
}
