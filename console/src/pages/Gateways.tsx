// Gateways as cards (Active / Not Active, served configuration version,
// in sync, proxies served, last error) and registering one: its token is
// shown once with the command that starts the gateway.
import { useState } from "react";
import { ApiError, enc, get, post, when } from "../api";
import { Alert, Code, Empty, Field, Loading, Status, errorFor, toApiError, useLoad, FormButtons } from "../ui";
import { useMe, isAdmin } from "../App";

interface Gateway {
  id: string;
  name: string;
  url: string;
  status: string;
  last_seen_at: string | null;
  config_version: string | null;
  proxies_served: number;
  last_error: { version: string; field: string; message: string } | null;
  group: string | null;
  restart_required: string[];
  in_sync?: boolean;
  deployments: { deployment_id: string; proxy: string; proxy_id: string; revision: number; status: string; invoke_url: string }[];
}

export function Gateways() {
  const me = useMe();
  // The list lacks `in_sync` (it costs building each gateway's
  // configuration), so each card reads its gateway.
  const list = useLoad(async () => {
    const l = await get<{ items: Gateway[] }>("/gateways");
    return Promise.all(l.items.map((g) => get<Gateway>(`/gateways/${enc(g.id)}`).catch(() => g)));
  }, []);
  const [registering, setRegistering] = useState(false);
  return (
    <section aria-labelledby="gw-title">
      <div className="page-head">
        <h1 id="gw-title">Gateways</h1>
        {isAdmin(me) ? (
          <button type="button" className="primary" onClick={() => setRegistering(true)}>
            Register gateway
          </button>
        ) : null}
        <button type="button" onClick={list.reload}>
          Refresh
        </button>
      </div>
      {registering ? <Register onDone={() => { setRegistering(false); list.reload(); }} /> : null}
      <Alert error={list.error} />
      {!list.data && !list.error ? <Loading what="gateways" /> : null}
      {list.data && list.data.length === 0 ? <Empty>No gateway registered.</Empty> : null}
      <div className="cards">
        {(list.data ?? []).map((g) => (
          <article key={g.id} className="card" aria-labelledby={`gw-${g.id}`}>
            <h2 id={`gw-${g.id}`}>
              {g.name} <Status value={g.status} />
            </h2>
            <p>
              <code>{g.url}</code>
              {g.group ? <span className="muted"> · group {g.group}</span> : null}
            </p>
            <dl className="facts">
              <dt>Served version</dt>
              <dd>
                <code>{g.config_version ?? "none yet"}</code>
              </dd>
              <dt>In sync</dt>
              <dd>{g.in_sync === undefined ? "?" : g.in_sync ? "yes" : "no, catching up"}</dd>
              <dt>Proxies served</dt>
              <dd>{g.proxies_served}</dd>
              <dt>Last seen</dt>
              <dd>{when(g.last_seen_at)}</dd>
              <dt>Last error</dt>
              <dd>{g.last_error ? <span className="error-text">{g.last_error.field}: {g.last_error.message}</span> : "none"}</dd>
              {g.restart_required.length ? (
                <>
                  <dt>Restart required</dt>
                  <dd>{g.restart_required.join(", ")}</dd>
                </>
              ) : null}
            </dl>
            {g.deployments.length ? (
              <details>
                <summary>{g.deployments.length} deployment(s)</summary>
                <ul>
                  {g.deployments.map((d) => (
                    <li key={d.deployment_id}>
                      <a href={`#/proxies/${enc(d.proxy_id)}/deploy`}>{d.proxy}</a> rev {d.revision} <Status value={d.status} />
                    </li>
                  ))}
                </ul>
              </details>
            ) : null}
          </article>
        ))}
      </div>
    </section>
  );
}

function Register({ onDone }: { onDone: () => void }) {
  const [name, setName] = useState("");
  const [url, setUrl] = useState("");
  const [group, setGroup] = useState("");
  const [error, setError] = useState<ApiError | null>(null);
  const [token, setToken] = useState<string | null>(null);
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    try {
      const body: Record<string, string> = { name: name.trim(), url: url.trim() };
      if (group.trim()) body.group = group.trim();
      const g = await post<{ token: string }>("/gateways", body);
      setToken(g.token);
      setError(null);
    } catch (err) {
      setError(toApiError(err));
    }
  };
  if (token) {
    const port = (() => {
      try {
        return new URL(url).port || "8080";
      } catch {
        return "8080";
      }
    })();
    return (
      <div className="panel once" role="status">
        <h2>Gateway {name} registered</h2>
        <p>
          Its token is shown <strong>once</strong>. Start the gateway with:
        </p>
        <Code
          label="Start command"
          text={`portcullis gateway --admin ${location.origin} --token ${token} \\\n  --listen 0.0.0.0:${port} --data-dir /var/lib/portcullis`}
        />
        <button type="button" onClick={onDone}>
          Done
        </button>
      </div>
    );
  }
  return (
    <form className="panel" onSubmit={submit} aria-labelledby="reg-title">
      <h2 id="reg-title">Register a gateway</h2>
      <div className="grid3">
        <Field label="Name" value={name} onChange={setName} required error={errorFor(error, "name")} />
        <Field label="URL clients use" type="url" value={url} onChange={setUrl} required placeholder="https://gw1.example.com" error={errorFor(error, "url")} />
        <Field label="Group (optional)" value={group} onChange={setGroup} error={errorFor(error, "group")} />
      </div>
      <Alert error={error} shown={["name", "url", "group"]} />
      <FormButtons submit="Register" onCancel={onDone} />
    </form>
  );
}
