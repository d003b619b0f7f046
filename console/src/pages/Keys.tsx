// API keys of a proxy or of an application. A new key is shown once,
// right after it is made: admin keeps only its SHA-256 and prefix, so it
// cannot be shown again.
import { useState } from "react";
import { ApiError, enc, get, post, when } from "../api";
import { Alert, CopyButton, Empty, Field, Loading, Status, errorFor, toApiError, useLoad, Head } from "../ui";
import { Proxy, proxyPath } from "./Proxies";

interface Key {
  id: string;
  name: string;
  prefix: string;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
  status: string;
}

export function Keys({ proxy }: { proxy: Proxy }) {
  return <KeyManager path={`${proxyPath(proxy.id)}/keys`} />;
}

/** Keys under `path` (a proxy's or an application's: the same API), with
 * `note` said of a new key beside "it will not be shown again". */
export function KeyManager({ path, note }: { path: string; note?: string }) {
  const list = useLoad(() => get<{ items: Key[] }>(path), [path]);
  const [name, setName] = useState("");
  const [expires, setExpires] = useState("");
  const [error, setError] = useState<ApiError | null>(null);
  const [created, setCreated] = useState<{ name: string; key: string } | null>(null);

  const create = async (e: React.FormEvent) => {
    e.preventDefault();
    const body: Record<string, unknown> = { name: name.trim() };
    // datetime-local is the user's local time; admin takes RFC 3339.
    if (expires) body.expires_at = new Date(expires).toISOString();
    try {
      const k = await post<{ key: string; name: string }>(path, body);
      setCreated({ name: k.name, key: k.key });
      setName("");
      setExpires("");
      setError(null);
      list.reload();
    } catch (err) {
      setError(toApiError(err));
    }
  };
  const revoke = async (k: Key) => {
    if (!confirm(`Revoke key ${k.name} (${k.prefix}…)? It stops working on every gateway within seconds.`)) return;
    try {
      await post(`${path}/${enc(k.id)}/revoke`);
      list.reload();
    } catch (err) {
      setError(toApiError(err));
    }
  };

  return (
    <div>
      <form className="panel" onSubmit={create} aria-labelledby="new-key-title">
        <h2 id="new-key-title">Create a key</h2>
        <div className="grid2">
          <Field label="Key name" value={name} onChange={setName} required error={errorFor(error, "name")} />
          <Field label="Expires (optional)" type="datetime-local" value={expires} onChange={setExpires} error={errorFor(error, "expires_at")} />
        </div>
        <Alert error={error} shown={["name", "expires_at"]} />
        <div className="buttons">
          <button type="submit" className="primary" disabled={!name.trim()}>
            Create key
          </button>
        </div>
      </form>
      {created ? (
        <div className="panel once" role="status" aria-live="polite">
          <h3>Key {created.name} created</h3>
          <p>
            Copy it now: <strong>it will not be shown again.</strong>
            {note ? ` ${note}` : null}
          </p>
          <div className="secret">
            <code data-testid="new-key">{created.key}</code> <CopyButton text={created.key} label="Copy key" />
          </div>
          <button type="button" className="small" onClick={() => setCreated(null)}>
            I have copied it
          </button>
        </div>
      ) : null}
      <h2>Keys</h2>
      {!list.data ? <Loading what="keys" /> : null}
      <Alert error={list.error} />
      {list.data && list.data.items.length === 0 ? <Empty>No keys yet.</Empty> : null}
      {list.data && list.data.items.length ? (
        <table>
          <Head cols={["Name", "Key", "Status", "Created", "Expires", "Last used", ""]} />
          <tbody>
            {list.data.items.map((k) => (
              <tr key={k.id}>
                <td>{k.name}</td>
                <td>
                  <code>{k.prefix}…</code>
                </td>
                <td>
                  <Status value={k.status} />
                </td>
                <td>{when(k.created_at)}</td>
                <td>{k.expires_at ? when(k.expires_at) : "never"}</td>
                <td>{when(k.last_used_at)}</td>
                <td>
                  {k.status === "active" ? (
                    <button type="button" className="small danger" onClick={() => revoke(k)} aria-label={`Revoke ${k.name}`}>
                      Revoke
                    </button>
                  ) : null}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </div>
  );
}
