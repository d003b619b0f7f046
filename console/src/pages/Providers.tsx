// Providers: one form per provider type with that type's fields.
// Credentials are write-only: admin never returns them, so the form
// shows whether each is set and sends one only when the user types it.
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
  credentials_set: string[];
  updated_at: string;
}

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
};

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
                <td>{p.models.length ? p.models.join(", ") : <span className="muted">any</span>}</td>
                <td>
                  {(TYPES[p.type]?.secrets ?? []).map((s) => (
                    <div key={s}>
                      {LABELS[s]}: {p.credentials_set.includes(s) ? "set" : "not set"}
                    </div>
                  ))}
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
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const spec = TYPES[type];

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
    const creds: Record<string, string> = {};
    for (const s of spec.secrets) if (secrets[s]?.trim()) creds[s] = secrets[s].trim();
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

  const shown = ["name", "type", "models", "credentials", ...spec.fields];
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
        {spec.secrets.map((s) => (
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
                  ? spec.secrets.length > 1
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
