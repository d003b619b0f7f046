// Test > Get Started: the invoke URL on each gateway the proxy is
// deployed to, ready-to-copy snippets, and a "try it" box. The box sends
// its request through admin (POST /proxies/{id}/try): gateways send no
// CORS headers, so a page from admin's origin could not read their answer.
import { useEffect, useState } from "react";
import { ApiError, enc, get, post } from "../api";
import { Alert, Code, Empty, Field, Select, errorFor, toApiError } from "../ui";
import { Proxy, proxyPath } from "./Proxies";
import { useMe, isAdmin } from "../App";

interface TryResult {
  url: string;
  status: number;
  headers: Record<string, string>;
  body: any;
  elapsed_ms: number;
}

function snippets(base: string, model: string) {
  const msg = "Hello!";
  return {
    curl: `curl ${base}/chat/completions \\
  -H "Authorization: Bearer $PORTCULLIS_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{"model": "${model}", "messages": [{"role": "user", "content": "${msg}"}]}'`,
    python: `from openai import OpenAI
import os

client = OpenAI(base_url="${base}", api_key=os.environ["PORTCULLIS_KEY"])
answer = client.chat.completions.create(
    model="${model}",
    messages=[{"role": "user", "content": "${msg}"}],
)
print(answer.choices[0].message.content)`,
    javascript: `import OpenAI from "openai";

const client = new OpenAI({ baseURL: "${base}", apiKey: process.env.PORTCULLIS_KEY });
const answer = await client.chat.completions.create({
  model: "${model}",
  messages: [{ role: "user", content: "${msg}" }],
});
console.log(answer.choices[0].message.content);`,
    anthropic: `import anthropic, os

# The proxy takes the Anthropic Messages API when "anthropic" is among its
# inbound formats; the SDK calls {base_url}/v1/messages.
client = anthropic.Anthropic(base_url="${base}", api_key=os.environ["PORTCULLIS_KEY"])
answer = client.messages.create(
    model="${model}",
    max_tokens=256,
    messages=[{"role": "user", "content": "${msg}"}],
)
print(answer.content[0].text)`,
  };
}

/** The answer's text, whichever API shape it has. */
function answerText(body: any): string | null {
  if (typeof body === "string") return body;
  return (
    body?.choices?.[0]?.message?.content ??
    body?.content?.find?.((c: any) => c.type === "text")?.text ??
    body?.error?.message ??
    null
  );
}

export function GetStarted({ proxy }: { proxy: Proxy }) {
  const me = useMe();
  const [model, setModel] = useState(proxy.routes.find((r: any) => r.model)?.model ?? "");
  useEffect(() => {
    // Only admins may read providers; developers type the model.
    if (model || !isAdmin(me)) return;
    get<{ models: string[] }>(`/providers/${enc(proxy.provider)}`)
      .then((p) => p.models[0] && setModel(p.models[0]))
      .catch(() => {});
  }, []);
  const [gateway, setGateway] = useState(proxy.deployed_gateways[0]?.gateway_id ?? "");
  const [key, setKey] = useState("");
  const [message, setMessage] = useState("Hello from the Portcullis console");
  const [result, setResult] = useState<TryResult | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const m = model || "gpt-4o-mini";

  if (!proxy.deployed_gateways.length)
    return (
      <Empty>
        Not deployed yet: deploy it from the <a href={`#/proxies/${enc(proxy.id)}/deploy`}>Deploy</a> tab to get an invoke URL.
      </Empty>
    );

  const send = async (e: React.FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setResult(null);
    try {
      const r = await post<TryResult>(`${proxyPath(proxy.id)}/try`, {
        gateway,
        key,
        request: { model: m, messages: [{ role: "user", content: message }] },
      });
      setResult(r);
      setError(null);
    } catch (err) {
      setError(toApiError(err));
    } finally {
      setBusy(false);
    }
  };

  const policyHeaders = result
    ? Object.entries(result.headers).filter(([h]) => h.startsWith("x-") && h !== "x-portcullis-route")
    : [];
  return (
    <div>
      {proxy.deployed_gateways.map((g) => {
        const s = snippets(g.base_url, m);
        return (
          <section key={g.gateway_id} className="panel" aria-label={`On gateway ${g.gateway}`}>
            <h2>On {g.gateway}</h2>
            <p>
              Invoke URL: <code data-testid="invoke-url">{g.invoke_url}</code>
            </p>
            <Code label="curl" text={s.curl} />
            <Code label="OpenAI Python" text={s.python} />
            <Code label="OpenAI JavaScript" text={s.javascript} />
            <Code label="Anthropic SDK (Python)" text={s.anthropic} />
          </section>
        );
      })}
      <form className="panel" onSubmit={send} aria-labelledby="try-title">
        <h2 id="try-title">Try it</h2>
        <div className="grid2">
          <Select label="Gateway" value={gateway} onChange={setGateway} options={proxy.deployed_gateways.map((g) => [g.gateway_id, g.gateway])} error={errorFor(error, "gateway")} />
          <Field label="API key" type="password" value={key} onChange={setKey} required error={errorFor(error, "key")} hint="A key of this proxy (Keys tab); used for this request only." />
          <Field label="Model" value={model} onChange={setModel} placeholder="gpt-4o-mini" />
          <Field label="Message" value={message} onChange={setMessage} multiline required />
        </div>
        <Alert error={error} shown={["gateway", "key"]} />
        <div className="buttons">
          <button type="submit" className="primary" disabled={busy || !key.trim()}>
            {busy ? "Sending…" : "Send"}
          </button>
        </div>
        {result ? (
          <div className="result" aria-live="polite">
            <p>
              <strong>Status</strong> <span data-testid="try-status">{result.status}</span> in {result.elapsed_ms} ms · <strong>route</strong>{" "}
              <code data-testid="try-route">{result.headers["x-portcullis-route"] ?? "none"}</code>
            </p>
            <h3>Answer</h3>
            <blockquote data-testid="try-answer">{answerText(result.body) ?? "(no text in the answer)"}</blockquote>
            <h3>Policy and gateway headers</h3>
            {policyHeaders.length ? (
              <table className="headers">
                <tbody>
                  {policyHeaders.map(([h, v]) => (
                    <tr key={h}>
                      <th scope="row">
                        <code>{h}</code>
                      </th>
                      <td>{v}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            ) : (
              <p className="muted">None.</p>
            )}
            <details>
              <summary>Whole answer</summary>
              <pre className="json">{JSON.stringify(result.body, null, 2)}</pre>
            </details>
          </div>
        ) : null}
      </form>
    </div>
  );
}
