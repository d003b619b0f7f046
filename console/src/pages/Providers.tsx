// Providers: one form per provider type with that type's fields, its ways
// of authenticating (a key, or a credential the gateway refreshes: Entra
// ID, the AWS credential chain, a Vertex AI service account), model
// discovery and aliases. Credentials are write-only: admin never returns
// them, so the form shows whether each is set and sends one only when the
// user types it.
import { useState } from "react";
import { ApiError, del, enc, get, patch, post, when } from "../api";
import { Alert, Empty, Field, Loading, Select, errorFor, toApiError, useLoad, Head, FormButtons } from "../ui";

interface Provider {
  id: string;
  name: string;
  type: string;
  base_url: string | null;
  models: string[];
  api_version: string | null;
  anthropic_version: string | null;
  default_max_tokens: number | null;
  region: string | null;
  discover_models?: boolean | { refresh_s?: number } | null;
  aliases?: Record<string, string>;
  auth?: Auth | null;
  vertex?: { project: string; location: string } | null;
  credentials_set: string[];
  updated_at: string;
}

/** A provider's `auth` as admin stores it (its secret is a credential). */
type Auth =
  | { type: "entra"; tenant_id: string; client_id: string; authority_url?: string; scope?: string }
  | {
      type: "aws";
      profile?: string;
      role_arn?: string;
      role_session_name?: string;
      external_id?: string;
      sts_endpoint?: string;
      imds_endpoint?: string;
    }
  | { type: "google-service-account"; token_uri?: string };

/** Each type's ways to authenticate: the `auth` type ("" = the type's
 * static credentials), its label, its fields and its secrets. */
const AUTH_MODES: Record<string, { value: string; label: string; fields: string[]; secrets: string[] }[]> = {
  "azure-openai": [
    { value: "", label: "API key", fields: [], secrets: ["api_key"] },
    {
      value: "entra",
      label: "Entra ID (client credentials)",
      fields: ["tenant_id", "client_id", "authority_url", "scope"],
      secrets: ["client_secret"],
    },
  ],
  bedrock: [
    { value: "", label: "Access keys", fields: [], secrets: ["aws_access_key_id", "aws_secret_access_key", "aws_session_token"] },
    {
      value: "aws",
      label: "AWS credential chain (environment, profile, web identity, instance role)",
      fields: ["profile", "role_arn", "role_session_name", "external_id", "sts_endpoint", "imds_endpoint"],
      secrets: [],
    },
  ],
  gemini: [
    { value: "", label: "API key (Gemini API)", fields: [], secrets: ["api_key"] },
    {
      value: "google-service-account",
      label: "Vertex AI (service account)",
      fields: ["project", "location", "token_uri"],
      secrets: ["service_account_json"],
    },
  ],
};

const REQUIRED_AUTH_FIELDS = ["tenant_id", "client_id", "project", "location"];

type FieldName = "base_url" | "api_version" | "anthropic_version" | "default_max_tokens" | "region";

/** What each provider type takes, besides name and models. */
const TYPES: Record<string, { label: string; fields: FieldName[]; baseUrlRequired?: boolean; secrets: string[] }> = {
  openai: { label: "OpenAI", fields: ["base_url"], secrets: ["api_key"] },
  "azure-openai": { label: "Azure OpenAI", fields: ["base_url", "api_version"], baseUrlRequired: true, secrets: ["api_key"] },
  anthropic: { label: "Anthropic", fields: ["base_url", "anthropic_version", "default_max_tokens"], secrets: ["api_key"] },
  gemini: { label: "Google Gemini", fields: ["base_url"], secrets: ["api_key"] },
  bedrock: {
    label: "AWS Bedrock",
    fields: ["region", "base_url"],
    secrets: ["aws_access_key_id", "aws_secret_access_key", "aws_session_token"],
  },
  mistral: { label: "Mistral", fields: ["base_url"], secrets: ["api_key"] },
  "openai-compatible": { label: "OpenAI-compatible (vLLM, Ollama, …)", fields: ["base_url"], baseUrlRequired: true, secrets: ["api_key"] },
};

const LABELS: Record<string, string> = {
  base_url: "Base URL",
  api_version: "API version",
  anthropic_version: "anthropic-version header",
  default_max_tokens: "Default max_tokens",
  region: "AWS region",
  api_key: "API key",
  aws_access_key_id: "AWS access key id",
  aws_secret_access_key: "AWS secret access key",
  aws_session_token: "AWS session token",
  client_secret: "Client secret",
  service_account_json: "Service account key (JSON)",
  tenant_id: "Tenant id",
  client_id: "Client id",
  authority_url: "Authority URL",
  scope: "Scope",
  profile: "Shared config profile",
  role_arn: "Role to assume (ARN)",
  role_session_name: "Role session name",
  external_id: "External id",
  sts_endpoint: "STS endpoint",
  imds_endpoint: "Instance metadata endpoint",
  project: "Google Cloud project",
  location: "Vertex AI location",
  token_uri: "Token URI",
};

/** Where each auth field's error is reported by admin. */
function authFieldPath(f: string): string {
  return f === "project" || f === "location" ? `vertex.${f}` : `auth.${f}`;
}

/** `alias=model` pairs, comma-separated, as a map. */
function parseAliases(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of text.split(",")) {
    const [alias, ...model] = pair.split("=");
    if (alias.trim()) out[alias.trim()] = model.join("=").trim();
  }
  return out;
}

/** The seconds between discoveries, or "" when discovery is off. */
function discoveryOf(p: Provider | null): string {
  const d = p?.discover_models;
  if (!d) return "";
  return typeof d === "object" && d.refresh_s ? String(d.refresh_s) : "600";
}

/** The secrets a provider of `type` takes with the auth type `auth`. */
function secretsOf(type: string, auth: string): string[] {
  const mode = (AUTH_MODES[type] ?? []).find((m) => m.value === auth);
  return mode ? mode.secrets : (TYPES[type]?.secrets ?? []);
}

export function Providers() {
  const list = useLoad(() => get<{ items: Provider[] }>("/providers"), []);
  const [editing, setEditing] = useState<Provider | "new" | null>(null);
  const [deleteError, setDeleteError] = useState<ApiError | null>(null);

  const remove = async (p: Provider) => {
    if (!confirm(`Delete provider ${p.name}?`)) return;
    try {
      await del(`/providers/${enc(p.id)}`);
      setDeleteError(null);
      list.reload();
    } catch (e) {
      setDeleteError(toApiError(e));
    }
  };

  return (
    <section aria-labelledby="providers-title">
      <div className="page-head">
        <h1 id="providers-title">Providers</h1>
        <button type="button" className="primary" onClick={() => setEditing("new")}>
          Add provider
        </button>
      </div>
      {deleteError ? (
        <div className="alert" role="alert">
          {deleteError.status === 409 ? (
            <>
              <strong>This provider is still in use.</strong> {deleteError.message}. Point those proxies at another
              provider (their Routes tab) and delete it again.
            </>
          ) : (
            <>{deleteError.message}</>
          )}
        </div>
      ) : null}
      {editing ? (
        <ProviderForm
          provider={editing === "new" ? null : editing}
          onDone={() => {
            setEditing(null);
            list.reload();
          }}
        />
      ) : null}
      <Alert error={list.error} />
      {list.loading && !list.data ? <Loading what="providers" /> : null}
      {list.data && list.data.items.length === 0 ? <Empty>No providers yet. Add one to route proxies to it.</Empty> : null}
      {list.data && list.data.items.length > 0 ? (
        <table>
          <Head cols={["Name", "Type", "Models", "Credentials", "Updated", ""]} />
          <tbody>
            {list.data.items.map((p) => (
              <tr key={p.id}>
                <td>
                  <strong>{p.name}</strong>
                  <div className="muted">{p.base_url ?? "default endpoint"}</div>
                </td>
                <td>{TYPES[p.type]?.label ?? p.type}</td>
                <td>
                  {p.models.length ? p.models.join(", ") : <span className="muted">any</span>}
                  {p.discover_models ? <div className="muted">+ discovered from the provider</div> : null}
                  {p.aliases && Object.keys(p.aliases).length ? (
                    <div className="muted">
                      aliases:{" "}
                      {Object.entries(p.aliases)
                        .map(([a, m]) => `${a} → ${m}`)
                        .join(", ")}
                    </div>
                  ) : null}
                </td>
                <td>
                  {secretsOf(p.type, p.auth?.type ?? "").map((s) => (
                    <div key={s}>
                      {LABELS[s]}: {p.credentials_set.includes(s) ? "set" : "not set"}
                    </div>
                  ))}
                  {p.auth ? <div className="muted">auth: {p.auth.type}</div> : null}
                </td>
                <td>{when(p.updated_at)}</td>
                <td className="actions">
                  <button type="button" className="small" onClick={() => setEditing(p)} aria-label={`Edit ${p.name}`}>
                    Edit
                  </button>
                  <button type="button" className="small danger" onClick={() => remove(p)} aria-label={`Delete ${p.name}`}>
                    Delete
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </section>
  );
}

function ProviderForm({ provider, onDone }: { provider: Provider | null; onDone: () => void }) {
  const [type, setType] = useState(provider?.type ?? "openai");
  const [name, setName] = useState(provider?.name ?? "");
  const [models, setModels] = useState((provider?.models ?? []).join(", "));
  const [values, setValues] = useState<Record<string, string>>(() => {
    const v: Record<string, string> = {};
    if (provider)
      for (const f of ["base_url", "api_version", "anthropic_version", "default_max_tokens", "region"] as FieldName[])
        v[f] = provider[f] == null ? "" : String(provider[f]);
    return v;
  });
  const [secrets, setSecrets] = useState<Record<string, string>>({});
  const [authType, setAuthType] = useState<string>(provider?.auth?.type ?? "");
  const [authValues, setAuthValues] = useState<Record<string, string>>(() => {
    const v: Record<string, string> = {};
    for (const [k, x] of Object.entries(provider?.auth ?? {})) if (k !== "type" && x != null) v[k] = String(x);
    for (const [k, x] of Object.entries(provider?.vertex ?? {})) v[k] = String(x);
    return v;
  });
  const [discovery, setDiscovery] = useState(discoveryOf(provider));
  const [aliases, setAliases] = useState(
    Object.entries(provider?.aliases ?? {})
      .map(([a, m]) => `${a}=${m}`)
      .join(", "),
  );
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const spec = TYPES[type];
  const modes = AUTH_MODES[type] ?? [];
  const mode = modes.find((m) => m.value === authType) ?? { value: "", label: "", fields: [], secrets: spec.secrets };
  // Azure's data-plane API lists no deployments: no discovery there.
  const discovers = type !== "azure-openai";

  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    setBusy(true);
    const body: Record<string, unknown> = {
      name: name.trim(),
      type,
      models: models
        .split(",")
        .map((m) => m.trim())
        .filter(Boolean),
    };
    for (const f of spec.fields) {
      const v = (values[f] ?? "").trim();
      if (f === "default_max_tokens") body[f] = v ? Number(v) : null;
      else body[f] = v || null;
    }
    if (discovers) body.discover_models = discovery ? { refresh_s: Number(discovery) } : false;
    body.aliases = parseAliases(aliases);
    const authFields: Record<string, string> = {};
    const vertex: Record<string, string> = {};
    for (const f of mode.fields) {
      const v = (authValues[f] ?? "").trim();
      if (!v) continue;
      if (f === "project" || f === "location") vertex[f] = v;
      else authFields[f] = v;
    }
    body.auth = mode.value ? { type: mode.value, ...authFields } : null;
    body.vertex = mode.value === "google-service-account" ? vertex : null;
    const creds: Record<string, string> = {};
    for (const s of mode.secrets) if (secrets[s]?.trim()) creds[s] = secrets[s].trim();
    // On edit, credentials left empty keep the stored ones.
    if (Object.keys(creds).length || !provider) body.credentials = creds;
    try {
      if (provider) await patch(`/providers/${enc(provider.id)}`, body);
      else await post("/providers", body);
      onDone();
    } catch (err) {
      setError(toApiError(err));
    } finally {
      setBusy(false);
    }
  };

  const shown = ["name", "type", "models", "credentials", "discover_models", "aliases", "auth", "vertex", ...spec.fields];
  return (
    <form className="panel" onSubmit={submit} aria-labelledby="provider-form-title">
      <h2 id="provider-form-title">{provider ? `Edit ${provider.name}` : "New provider"}</h2>
      <div className="grid2">
        <Select
          label="Type"
          value={type}
          onChange={setType}
          options={Object.entries(TYPES).map(([k, v]) => [k, v.label])}
          error={errorFor(error, "type")}
        />
        <Field label="Name" value={name} onChange={setName} required error={errorFor(error, "name")} />
        {spec.fields.map((f) => (
          <Field
            key={f}
            label={LABELS[f]}
            type={f === "default_max_tokens" ? "number" : f === "base_url" ? "url" : "text"}
            value={values[f] ?? ""}
            onChange={(v) => setValues({ ...values, [f]: v })}
            required={f === "base_url" && spec.baseUrlRequired}
            error={errorFor(error, f)}
            hint={f === "base_url" && !spec.baseUrlRequired ? "Empty: the provider's public endpoint." : undefined}
          />
        ))}
        <Field
          label="Models"
          value={models}
          onChange={setModels}
          error={errorFor(error, "models")}
          hint="Comma-separated; empty: any model."
        />
        {discovers ? (
          <Select
            label="Model discovery"
            value={discovery ? "on" : ""}
            onChange={(v) => setDiscovery(v ? discovery || "600" : "")}
            options={[
              ["", "Off: only the models listed here"],
              ["on", "On: also the models the provider lists"],
            ]}
            error={errorFor(error, "discover_models")}
          />
        ) : null}
        {discovers && discovery ? (
          <Field
            label="Refresh discovered models every (seconds)"
            type="number"
            value={discovery}
            onChange={setDiscovery}
            error={errorFor(error, "discover_models.refresh_s")}
          />
        ) : null}
        <Field
          label="Aliases"
          value={aliases}
          onChange={setAliases}
          error={errorFor(error, "aliases")}
          placeholder="fast=gpt-4o-mini, smart=gpt-4.1"
          hint="Client-facing names for provider models: alias=model, comma-separated."
        />
        {modes.length ? (
          <Select
            label="Authentication"
            value={authType}
            onChange={setAuthType}
            options={modes.map((m) => [m.value, m.label] as [string, string])}
            error={errorFor(error, "auth")}
            hint={authType ? "The gateway fetches the credential and refreshes it before it expires." : undefined}
          />
        ) : null}
        {mode.fields.map((f) => (
          <Field
            key={f}
            label={LABELS[f]}
            value={authValues[f] ?? ""}
            onChange={(v) => setAuthValues({ ...authValues, [f]: v })}
            required={REQUIRED_AUTH_FIELDS.includes(f)}
            error={errorFor(error, authFieldPath(f))}
          />
        ))}
        {mode.secrets.map((s) => (
          <Field
            key={s}
            label={LABELS[s]}
            type="password"
            autoComplete="new-password"
            value={secrets[s] ?? ""}
            onChange={(v) => setSecrets({ ...secrets, [s]: v })}
            error={errorFor(error, `credentials.${s}`, "credentials")}
            hint={
              provider
                ? provider.credentials_set.includes(s)
                  ? mode.secrets.length > 1
                    ? "Set (never shown). Typing any credential replaces them all: fill in each one needed."
                    : "Set (never shown). Type a new value to replace it."
                  : "Not set."
                : "Stored sealed; never shown again."
            }
          />
        ))}
      </div>
      <Alert error={error} shown={shown} />
      <FormButtons submit={provider ? "Save" : "Create provider"} onCancel={onDone} disabled={busy} />
    </form>
  );
}
