// LLM > Proxies: the list with search, and the create wizard (name with
// its id preview, version, context, description; then provider, inbound
// formats and resources; then a review).
import { useMemo, useState } from "react";
import { ApiError, enc, get, post, slugify, when } from "../api";
import { go, href } from "../router";
import { Alert, Checks, Empty, Field, Loading, Select, errorFor, toApiError, useLoad, Head } from "../ui";
import { useMe, isAdmin } from "../App";

export interface Proxy {
  id: string;
  name: string;
  version: string;
  description: string | null;
  context: string;
  provider: string;
  inbound: string[];
  resources: string[];
  routes: any[];
  routing: any;
  semantic_service: any;
  prompt_guard: any;
  policies: any[];
  revision: number;
  owner: any;
  updated_at: string;
  deployed_gateways: {
    gateway_id: string;
    gateway: string;
    deployment_id: string;
    revision: number;
    base_url: string;
    invoke_url: string;
    deployed_at: string;
  }[];
}

/** The inbound formats and resources a proxy may offer, as admin's
 * OpenAPI document lists them (so a new one shows up without a console
 * change); these until it has loaded. */
const INBOUND = ["openai", "anthropic", "gemini"];
const RESOURCES = ["chat/completions", "embeddings", "models"];

export function useProxyEnums() {
  const doc = useLoad(() => get<any>("/openapi.json"), []);
  const props = doc.data?.components?.schemas?.ProxyInput?.properties;
  return {
    inbound: (props?.inbound?.items?.enum as string[] | undefined) ?? INBOUND,
    resources: (props?.resources?.items?.enum as string[] | undefined) ?? RESOURCES,
  };
}

export function Proxies() {
  const list = useLoad(() => get<{ items: Proxy[] }>("/proxies"), []);
  const [q, setQ] = useState("");
  const items = useMemo(() => {
    const needle = q.trim().toLowerCase();
    return (list.data?.items ?? []).filter(
      (p) =>
        !needle ||
        [p.name, p.id, p.context, p.description ?? "", p.provider].some((s) => s.toLowerCase().includes(needle)),
    );
  }, [list.data, q]);
  return (
    <section aria-labelledby="proxies-title">
      <div className="page-head">
        <h1 id="proxies-title">Proxies</h1>
        <a className="button primary" href="#/new-proxy">
          Create proxy
        </a>
      </div>
      <div className="search">
        <label htmlFor="proxy-search" className="visually-hidden">
          Search proxies
        </label>
        <input id="proxy-search" type="search" placeholder="Search by name, context, provider…" value={q} onChange={(e) => setQ(e.target.value)} />
      </div>
      <Alert error={list.error} />
      {list.loading && !list.data ? <Loading what="proxies" /> : null}
      {list.data && items.length === 0 ? (
        <Empty>{q ? "No proxy matches." : "No proxies yet. Create one to put an LLM behind a gateway."}</Empty>
      ) : null}
      {items.length > 0 ? (
        <table>
          <Head cols={["Name", "Context", "Provider", "Version", "Deployed to", "Updated"]} />
          <tbody>
            {items.map((p) => (
              <tr key={p.id}>
                <td>
                  <a href={href("proxies", p.id)}>{p.name}</a>
                  {p.description ? <div className="muted">{p.description}</div> : null}
                </td>
                <td>
                  <code>{p.context}</code>
                </td>
                <td>{p.provider}</td>
                <td>
                  {p.version} · rev {p.revision}
                </td>
                <td>{p.deployed_gateways.length ? p.deployed_gateways.map((g) => g.gateway).join(", ") : <span className="muted">not deployed</span>}</td>
                <td>{when(p.updated_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </section>
  );
}

const STEPS = ["Details", "Provider and API", "Review"];

export function NewProxy() {
  const me = useMe();
  // Developers cannot list providers; they type the provider id an admin gave them.
  const providers = useLoad(
    () => (isAdmin(me) ? get<{ items: { id: string; name: string; type: string }[] }>("/providers") : Promise.resolve({ items: [] })),
    [],
  );
  const enums = useProxyEnums();
  const [step, setStep] = useState(0);
  const [name, setName] = useState("");
  const [version, setVersion] = useState("v1.0");
  const [context, setContext] = useState("");
  const [description, setDescription] = useState("");
  const [provider, setProvider] = useState("");
  const [inbound, setInbound] = useState<string[]>(["openai"]);
  const [resources, setResources] = useState<string[]>(["chat/completions"]);
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const id = slugify(name);
  const effectiveContext = context.trim() || (id ? `/${id}` : "");
  const providerOptions = providers.data?.items ?? [];
  const chosenProvider = provider || providerOptions[0]?.id || "";

  // Which step holds the field admin named, so the error is seen.
  const stepOf = (field: string | null) =>
    field && ["provider", "inbound", "resources"].some((f) => field.startsWith(f)) ? 1 : 0;

  const create = async () => {
    setBusy(true);
    const body: Record<string, unknown> = { name: name.trim(), version: version.trim() || undefined, inbound, resources };
    if (context.trim()) body.context = context.trim();
    if (description.trim()) body.description = description.trim();
    if (chosenProvider) body.provider = chosenProvider;
    try {
      const p = await post<Proxy>("/proxies", body);
      go("proxies", p.id);
    } catch (e) {
      const err = toApiError(e);
      setError(err);
      if (err.field) setStep(stepOf(err.field));
    } finally {
      setBusy(false);
    }
  };

  const next = (e: React.FormEvent) => {
    e.preventDefault();
    if (step < 2) setStep(step + 1);
    else create();
  };

  return (
    <section aria-labelledby="wizard-title">
      <h1 id="wizard-title">Create proxy</h1>
      <ol className="steps" aria-label="Steps">
        {STEPS.map((s, i) => (
          <li key={s} aria-current={i === step ? "step" : undefined} className={i < step ? "done" : ""}>
            {i + 1}. {s}
          </li>
        ))}
      </ol>
      <form className="panel" onSubmit={next}>
        {step === 0 ? (
          <div className="grid2">
            <Field
              label="Name"
              value={name}
              onChange={setName}
              required
              error={errorFor(error, "name")}
              hint={id ? <>Id: <code>{id}</code></> : "Its id is derived from it."}
            />
            <Field label="Version" value={version} onChange={setVersion} error={errorFor(error, "version")} />
            <Field
              label="Context (base path)"
              value={context}
              onChange={setContext}
              placeholder={id ? `/${id}` : "/my-proxy"}
              error={errorFor(error, "context")}
              hint={effectiveContext ? <>Clients call <code>{effectiveContext}/chat/completions</code> on a gateway.</> : undefined}
            />
            <Field label="Description" value={description} onChange={setDescription} multiline error={errorFor(error, "description")} />
          </div>
        ) : null}
        {step === 1 ? (
          <div className="grid2">
            {isAdmin(me) ? (
              <Select
                label="Provider"
                value={chosenProvider}
                onChange={setProvider}
                options={providerOptions.map((p) => [p.id, `${p.name} (${p.type})`])}
                error={errorFor(error, "provider")}
                hint={providerOptions.length ? undefined : <>No provider yet: <a href="#/providers">add one</a> first.</>}
              />
            ) : (
              <Field label="Provider id" value={provider} onChange={setProvider} error={errorFor(error, "provider")} hint="Empty: the most recently updated provider." />
            )}
            <Checks legend="Inbound formats" options={enums.inbound} value={inbound} onChange={setInbound} error={errorFor(error, "inbound")} />
            <Checks legend="Resources" options={enums.resources} value={resources} onChange={setResources} error={errorFor(error, "resources")} />
          </div>
        ) : null}
        {step === 2 ? (
          <dl className="review">
            <dt>Name</dt>
            <dd>
              {name} (id <code>{id}</code>)
            </dd>
            <dt>Version</dt>
            <dd>{version}</dd>
            <dt>Context</dt>
            <dd>
              <code>{effectiveContext}</code>
            </dd>
            <dt>Description</dt>
            <dd>{description || "—"}</dd>
            <dt>Provider</dt>
            <dd>{chosenProvider || "the most recently updated provider"}</dd>
            <dt>Inbound formats</dt>
            <dd>{inbound.join(", ")}</dd>
            <dt>Resources</dt>
            <dd>{resources.join(", ")}</dd>
          </dl>
        ) : null}
        <Alert error={error} shown={step === 0 ? ["name", "version", "context", "description"] : step === 1 ? ["provider", "inbound", "resources"] : []} />
        <div className="buttons">
          {step > 0 ? (
            <button type="button" onClick={() => setStep(step - 1)}>
              Back
            </button>
          ) : null}
          <button type="submit" className="primary" disabled={busy || (step === 0 && !id)}>
            {step < 2 ? "Next" : busy ? "Creating…" : "Create proxy"}
          </button>
        </div>
      </form>
    </section>
  );
}

export const proxyPath = (id: string) => `/proxies/${enc(id)}`;
