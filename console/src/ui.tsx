// Small building blocks shared by the pages: loading state, labelled
// fields that show admin's field errors, alerts, copy buttons, tabs.
import { ReactNode, useCallback, useEffect, useId, useState } from "react";
import { ApiError } from "./api";

export function useLoad<T>(f: () => Promise<T>, deps: unknown[]) {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [loading, setLoading] = useState(true);
  const reload = useCallback(() => {
    setLoading(true);
    f()
      .then((d) => {
        setData(d);
        setError(null);
      })
      .catch((e) => setError(toApiError(e)))
      .finally(() => setLoading(false));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  useEffect(reload, [reload]);
  return { data, error, loading, reload, setData };
}

export function toApiError(e: unknown): ApiError {
  return e instanceof ApiError ? e : new ApiError(0, "client", String((e as Error)?.message ?? e), null);
}

/** Admin's error for `field`, if the error names it or something inside it. */
export function errorFor(e: ApiError | null, ...fields: string[]): string | undefined {
  if (!e?.field) return undefined;
  for (const f of fields) {
    if (e.field === f || e.field.startsWith(f + ".") || e.field.startsWith(f + "[") || e.field.startsWith(f + "/"))
      return e.message;
  }
  return undefined;
}

/** An error no field on the form shows: as an alert above it. */
export function Alert({ error, shown = [] }: { error: ApiError | null; shown?: string[] }) {
  if (!error) return null;
  if (error.field && shown.some((f) => errorFor(error, f))) return null;
  return (
    <div className="alert" role="alert">
      <strong>{error.status ? `${error.status} ${error.code}` : error.code}</strong>: {error.message}
      {error.field ? <div className="muted">field: {error.field}</div> : null}
    </div>
  );
}

export function Notice({ children }: { children: ReactNode }) {
  return (
    <div className="notice" role="status">
      {children}
    </div>
  );
}

interface FieldProps {
  label: string;
  value: string;
  onChange: (v: string) => void;
  error?: string;
  hint?: ReactNode;
  type?: string;
  required?: boolean;
  placeholder?: string;
  multiline?: boolean;
  name?: string;
  autoComplete?: string;
  /** The id of a <datalist> of suggestions. */
  list?: string;
}

export function Field(p: FieldProps) {
  const id = useId();
  const described = p.error ? id + "-err" : p.hint ? id + "-hint" : undefined;
  const common = {
    id,
    name: p.name,
    value: p.value,
    required: p.required,
    placeholder: p.placeholder,
    "aria-invalid": p.error ? true : undefined,
    "aria-describedby": described,
    onChange: (e: { target: { value: string } }) => p.onChange(e.target.value),
  };
  return (
    <div className={"field" + (p.error ? " has-error" : "")}>
      <label htmlFor={id}>
        {p.label}
        {p.required ? <span aria-hidden="true"> *</span> : null}
      </label>
      {p.multiline ? (
        <textarea rows={4} {...common} />
      ) : (
        <input type={p.type ?? "text"} autoComplete={p.autoComplete ?? "off"} list={p.list} {...common} />
      )}
      {p.error ? (
        <div className="error-text" id={id + "-err"} role="alert">
          {p.error}
        </div>
      ) : p.hint ? (
        <div className="hint" id={id + "-hint"}>
          {p.hint}
        </div>
      ) : null}
    </div>
  );
}

export function Select(p: {
  label: string;
  value: string;
  onChange: (v: string) => void;
  options: (string | [string, string])[];
  error?: string;
  hint?: ReactNode;
}) {
  const id = useId();
  return (
    <div className={"field" + (p.error ? " has-error" : "")}>
      <label htmlFor={id}>{p.label}</label>
      <select
        id={id}
        value={p.value}
        aria-invalid={p.error ? true : undefined}
        aria-describedby={p.error ? id + "-err" : undefined}
        onChange={(e) => p.onChange(e.target.value)}
      >
        {p.options.map((o) => {
          const [v, l] = typeof o === "string" ? [o, o] : o;
          return (
            <option key={v} value={v}>
              {l}
            </option>
          );
        })}
      </select>
      {p.error ? (
        <div className="error-text" id={id + "-err"} role="alert">
          {p.error}
        </div>
      ) : p.hint ? (
        <div className="hint">{p.hint}</div>
      ) : null}
    </div>
  );
}

export function Checks(p: {
  legend: string;
  options: string[];
  value: string[];
  onChange: (v: string[]) => void;
  error?: string;
}) {
  return (
    <fieldset className={"field" + (p.error ? " has-error" : "")}>
      <legend>{p.legend}</legend>
      <div className="checks">
        {p.options.map((o) => (
          <label key={o} className="check">
            <input
              type="checkbox"
              checked={p.value.includes(o)}
              onChange={(e) => p.onChange(e.target.checked ? [...p.value, o] : p.value.filter((x) => x !== o))}
            />{" "}
            {o}
          </label>
        ))}
      </div>
      {p.error ? (
        <div className="error-text" role="alert">
          {p.error}
        </div>
      ) : null}
    </fieldset>
  );
}

export function CopyButton({ text, label = "Copy" }: { text: string; label?: string }) {
  const [done, setDone] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      // Clipboard access needs a secure context (https or localhost);
      // elsewhere fall back to a selection the user can copy.
      const t = document.createElement("textarea");
      t.value = text;
      document.body.appendChild(t);
      t.select();
      document.execCommand("copy");
      t.remove();
    }
    setDone(true);
    setTimeout(() => setDone(false), 1500);
  };
  return (
    <button type="button" className="small" onClick={copy} aria-label={`${label} to clipboard`}>
      {done ? "Copied" : label}
    </button>
  );
}

export function Code({ text, label }: { text: string; label: string }) {
  return (
    <div className="code">
      <div className="code-head">
        <span>{label}</span>
        <CopyButton text={text} label={`Copy ${label}`} />
      </div>
      <pre tabIndex={0} aria-label={label}>
        <code>{text}</code>
      </pre>
    </div>
  );
}

export function Status({ value }: { value: string }) {
  const cls = /^(Active|active)$/.test(value)
    ? "ok"
    : /Failed|revoked|expired/i.test(value)
      ? "bad"
      : "off";
  return <span className={"badge " + cls}>{value}</span>;
}

export function Tabs({
  tabs,
  current,
  base,
}: {
  tabs: [string, string][];
  current: string;
  base: string;
}) {
  return (
    <nav className="tabs" aria-label="Sections">
      {tabs.map(([slug, label]) => (
        <a key={slug} href={`${base}/${slug}`} aria-current={slug === current ? "page" : undefined}>
          {label}
        </a>
      ))}
    </nav>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p className="muted" role="status">
      Loading {what}…
    </p>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <p className="empty">{children}</p>;
}

/** A table's header row; an empty name is the actions column, named for
 * screen readers only. */
export function Head({ cols }: { cols: string[] }) {
  return (
    <thead>
      <tr>
        {cols.map((c, i) => (
          <th key={i}>{c || <span className="visually-hidden">Actions</span>}</th>
        ))}
      </tr>
    </thead>
  );
}

/** A form's submit and cancel buttons. */
export function FormButtons({ submit, onCancel, disabled }: { submit: string; onCancel: () => void; disabled?: boolean }) {
  return (
    <div className="buttons">
      <button type="submit" className="primary" disabled={disabled}>
        {submit}
      </button>
      <button type="button" onClick={onCancel}>
        Cancel
      </button>
    </div>
  );
}
