// Develop > Policies: the proxy's policy chain. Attach one from the hub's
// catalogue with a form generated from its settings schema; reorder, edit
// and detach. Each change is a new revision of the proxy.
import { useEffect, useState } from "react";
import { ApiError, del, enc, get, patch, post } from "../api";
import { SchemaForm } from "../SchemaForm";
import { renderMarkdown } from "../markdown";
import { Alert, Empty, Loading, Select, errorFor, toApiError, useLoad } from "../ui";
import { Proxy, proxyPath } from "./Proxies";

interface Attachment {
  id: string;
  name: string;
  version: string;
  settings: unknown;
  order: number;
  on_error: string;
  phase?: string;
  sha256?: string;
}
export interface CatalogueItem {
  name: string;
  version: string;
  category: string;
  display_name: string;
  description: string;
  phases: string[];
}
export interface Manifest extends CatalogueItem {
  settings_schema: object;
  defaults: Record<string, unknown>;
  docs?: string;
  sha256: string;
}

export function Attachments({ proxy, onChanged }: { proxy: Proxy; onChanged: () => void }) {
  const list = useLoad(() => get<{ items: Attachment[] }>(`${proxyPath(proxy.id)}/policies`), [proxy.id]);
  const [editing, setEditing] = useState<Attachment | "new" | null>(() =>
    new URLSearchParams(location.hash.split("?")[1] ?? "").get("attach") ? "new" : null,
  );
  const [error, setError] = useState<ApiError | null>(null);
  const items = [...(list.data?.items ?? [])].sort((a, b) => a.order - b.order);

  const changed = () => {
    list.reload();
    onChanged();
  };
  // Reordering swaps two neighbours' positions; orders are renumbered
  // 0..n so ties never hide the move.
  const move = async (i: number, by: number) => {
    const order = items.map((a) => a.id);
    const [x] = order.splice(i, 1);
    order.splice(i + by, 0, x);
    try {
      for (const [n, id] of order.entries()) {
        const a = items.find((y) => y.id === id)!;
        if (a.order !== n) await patch(`${proxyPath(proxy.id)}/policies/${enc(id)}`, { order: n });
      }
      setError(null);
    } catch (e) {
      setError(toApiError(e));
    }
    changed();
  };
  const detach = async (a: Attachment) => {
    if (!confirm(`Detach ${a.name}?`)) return;
    try {
      await del(`${proxyPath(proxy.id)}/policies/${enc(a.id)}`);
      setError(null);
    } catch (e) {
      setError(toApiError(e));
    }
    changed();
  };

  return (
    <div>
      <div className="page-head">
        <h2>Policies</h2>
        <button type="button" className="primary" onClick={() => setEditing("new")}>
          Attach policy
        </button>
      </div>
      <p className="muted">Policies run in this order on every request; a change is a new revision, live once deployed.</p>
      <Alert error={error ?? list.error} />
      {editing ? (
        <AttachForm
          proxy={proxy}
          attachment={editing === "new" ? null : editing}
          nextOrder={items.length ? Math.max(...items.map((a) => a.order)) + 1 : 0}
          onDone={() => {
            setEditing(null);
            changed();
          }}
        />
      ) : null}
      {!list.data ? <Loading what="policies" /> : null}
      {list.data && items.length === 0 ? <Empty>No policy attached.</Empty> : null}
      {items.length ? (
        <ol className="chain">
          {items.map((a, i) => (
            <li key={a.id} className="panel">
              <div className="chain-head">
                <strong>
                  {i + 1}. {a.name}@{a.version}
                </strong>
                <span className="muted">
                  on error: {a.on_error}
                  {a.phase ? ` · phase ${a.phase}` : ""}
                </span>
                <span className="actions">
                  <button type="button" className="small" disabled={i === 0} onClick={() => move(i, -1)} aria-label={`Move ${a.name} up`}>
                    ↑
                  </button>
                  <button type="button" className="small" disabled={i === items.length - 1} onClick={() => move(i, 1)} aria-label={`Move ${a.name} down`}>
                    ↓
                  </button>
                  <button type="button" className="small" onClick={() => setEditing(a)} aria-label={`Edit ${a.name}`}>
                    Edit
                  </button>
                  <button type="button" className="small danger" onClick={() => detach(a)} aria-label={`Detach ${a.name}`}>
                    Detach
                  </button>
                </span>
              </div>
              <pre className="json">{JSON.stringify(a.settings, null, 2)}</pre>
            </li>
          ))}
        </ol>
      ) : null}
    </div>
  );
}

function AttachForm({
  proxy,
  attachment,
  nextOrder,
  onDone,
}: {
  proxy: Proxy;
  attachment: Attachment | null;
  nextOrder: number;
  onDone: () => void;
}) {
  const catalogue = useLoad(() => get<{ items: CatalogueItem[] }>("/policies"), []);
  const wanted = new URLSearchParams(location.hash.split("?")[1] ?? "").get("attach");
  const [name, setName] = useState(attachment?.name ?? wanted ?? "");
  const [versions, setVersions] = useState<string[]>([]);
  const [version, setVersion] = useState(attachment?.version ?? "");
  const [manifest, setManifest] = useState<Manifest | null>(null);
  const [settings, setSettings] = useState<unknown>(attachment?.settings ?? {});
  const [onError, setOnError] = useState(attachment?.on_error ?? "closed");
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    if (!name && catalogue.data?.items.length) setName(catalogue.data.items[0].name);
  }, [catalogue.data, name]);
  useEffect(() => {
    if (!name) return;
    get<{ versions: { version: string }[]; latest_version: string }>(`/policies/${enc(name)}`)
      .then((p) => {
        setVersions(p.versions.map((v) => v.version));
        setVersion((v) => (attachment && v ? v : p.latest_version));
      })
      .catch((e) => setError(toApiError(e)));
  }, [name]);
  useEffect(() => {
    if (!name || !version) return;
    get<Manifest>(`/policies/${enc(name)}/versions/${enc(version)}`)
      .then((m) => {
        setManifest(m);
        // A new attachment starts from the policy's defaults, so they
        // show in the form.
        if (!attachment) setSettings(structuredClone(m.defaults ?? {}));
      })
      .catch((e) => setError(toApiError(e)));
  }, [name, version]);

  const submit = async () => {
    setBusy(true);
    try {
      if (attachment)
        await patch(`${proxyPath(proxy.id)}/policies/${enc(attachment.id)}`, { version, settings, on_error: onError });
      else await post(`${proxyPath(proxy.id)}/policies`, { name, version, settings, on_error: onError, order: nextOrder });
      onDone();
    } catch (e) {
      setError(toApiError(e));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="panel attach" aria-labelledby="attach-title">
      <h3 id="attach-title">{attachment ? `Edit ${attachment.name}` : "Attach a policy"}</h3>
      <div className="grid3">
        {attachment ? null : (
          <Select
            label="Policy"
            value={name}
            onChange={(v) => {
              setName(v);
              setVersion("");
              setError(null);
            }}
            options={(catalogue.data?.items ?? []).map((p) => [p.name, `${p.display_name || p.name} (${p.category})`])}
            error={errorFor(error, "name")}
          />
        )}
        <Select label="Version" value={version} onChange={setVersion} options={versions.length ? versions : [version]} error={errorFor(error, "version", "sha256")} />
        <Select
          label="On error"
          value={onError}
          onChange={setOnError}
          options={[
            ["closed", "closed: refuse the request"],
            ["open", "open: let it through"],
          ]}
          error={errorFor(error, "on_error")}
        />
      </div>
      {manifest ? (
        <>
          <div className="docs" dangerouslySetInnerHTML={{ __html: renderMarkdown(manifest.docs || manifest.description) }} />
          <details>
            <summary>Defaults</summary>
            <pre className="json">{JSON.stringify(manifest.defaults, null, 2)}</pre>
          </details>
          <h4>Settings</h4>
          <SchemaForm
            schema={manifest.settings_schema}
            data={settings}
            onChange={setSettings}
            onSubmit={submit}
            error={error}
            submitText={attachment ? "Save" : "Attach"}
            disabled={busy}
          />
        </>
      ) : (
        <Loading what="the policy's settings schema" />
      )}
      <Alert error={error} shown={["settings", "name", "version", "on_error"]} />
      <button type="button" onClick={onDone}>
        Cancel
      </button>
    </div>
  );
}
