// A policy's settings form, generated from the JSON Schema its hub
// version publishes (never written per policy). Admin is the one
// validator: the form submits without checking, and a 422 whose field is
// `settings/<JSON pointer>` is put on the field at that pointer.
import Form from "@rjsf/core";
import type { ErrorSchema, RJSFSchema, UiSchema } from "@rjsf/utils";
import validator from "@rjsf/validator-ajv8";
import { ApiError } from "./api";

/** Admin's `settings/a/0/b` as the form's nested error object. */
export function pointerErrors(e: ApiError | null): { schema: ErrorSchema; root: string | null } {
  if (!e || !e.field || !(e.field === "settings" || e.field.startsWith("settings/"))) return { schema: {}, root: null };
  const path = e.field
    .slice("settings".length)
    .split("/")
    .filter(Boolean)
    .map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
  if (path.length === 0) return { schema: {}, root: e.message };
  const schema: any = {};
  let at = schema;
  for (const p of path) {
    at[p] = at[p] ?? {};
    at = at[p];
  }
  at.__errors = [e.message];
  return { schema, root: null };
}

export function SchemaForm({
  schema,
  data,
  onChange,
  onSubmit,
  error,
  submitText,
  disabled,
}: {
  schema: object;
  data: unknown;
  onChange: (d: unknown) => void;
  onSubmit: () => void;
  error: ApiError | null;
  submitText: string;
  disabled?: boolean;
}) {
  const { schema: extraErrors, root } = pointerErrors(error);
  const uiSchema: UiSchema = { "ui:submitButtonOptions": { submitText, props: { disabled, className: "primary" } } };
  return (
    <div className="schema-form">
      {root ? (
        <div className="alert" role="alert">
          {root}
        </div>
      ) : null}
      <Form
        schema={schema as RJSFSchema}
        uiSchema={uiSchema}
        formData={data}
        validator={validator}
        noValidate
        noHtml5Validate
        showErrorList={false}
        extraErrors={extraErrors}
        onChange={(e) => onChange(e.formData)}
        onSubmit={() => onSubmit()}
      />
    </div>
  );
}
