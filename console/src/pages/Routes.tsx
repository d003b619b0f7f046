// Routes and the routing strategy (docs/routing.md): model-based,
// weighted, failover and semantic (topics with example utterances, which
// can also be uploaded as a text file, one per line).
import { useState } from "react";
import { ApiError, api, enc, patch } from "../api";
import { Alert, Field, Select, errorFor, toApiError } from "../ui";
import { Proxy, proxyPath } from "./Proxies";

interface Topic {
  name: string;
  utterances: string;
  threshold: string;
}
interface RouteRow {
  provider: string;
  name: string;
  model: string;
  models: string;
  weight: string;
  priority: string;
  topics: Topic[];
  extra: Record<string, unknown>;
}

const STRATEGIES: [string, string][] = [
  ["single", "Single route"],
  ["model-based", "Model-based: the request's model picks the route"],
  ["weighted", "Weighted: random by weight"],
  ["failover", "Failover: in priority order"],
  ["semantic", "Semantic: the prompt's topic picks the route"],
];

const num = (s: string) => (s.trim() === "" ? undefined : Number(s));

function fromProxy(p: Proxy): RouteRow[] {
  const routes = p.routes.length ? p.routes : [{ provider: p.provider }];
  return routes.map((r: any) => {
    const { provider, name, model, models, weight, priority, topics, ...extra } = r;
    return {
      provider: provider ?? "",
      name: name ?? "",
      model: model ?? "",
      models: (models ?? []).join(", "),
      weight: weight == null ? "" : String(weight),
      priority: priority == null ? "" : String(priority),
      topics: (topics ?? []).map((t: any) => ({
        name: t.name,
        utterances: (t.utterances ?? []).join("\n"),
        threshold: t.threshold == null ? "" : String(t.threshold),
      })),
      extra,
    };
  });
}

export function Routes({ proxy, onSaved }: { proxy: Proxy; onSaved: (p: Proxy) => void }) {
  const [rows, setRows] = useState<RouteRow[]>(() => fromProxy(proxy));
  const [strategy, setStrategy] = useState<string>(proxy.routing?.strategy ?? "single");
  const [fallback, setFallback] = useState<string>(proxy.routing?.fallback?.route ?? "");
  const [threshold, setThreshold] = useState<string>(proxy.routing?.threshold == null ? "" : String(proxy.routing.threshold));
  const [embProvider, setEmbProvider] = useState<string>(proxy.semantic_service?.provider ?? "");
  const [embModel, setEmbModel] = useState<string>(proxy.semantic_service?.model ?? "");
  const [error, setError] = useState<ApiError | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const semantic = strategy === "semantic";

  const update = (i: number, r: Partial<RouteRow>) => setRows(rows.map((x, j) => (j === i ? { ...x, ...r } : x)));

  const save = async (e: React.FormEvent) => {
    e.preventDefault();
    const routes = rows.map((r) => {
      const out: Record<string, unknown> = { ...r.extra, provider: r.provider.trim() };
      if (r.name.trim()) out.name = r.name.trim();
      if (r.model.trim()) out.model = r.model.trim();
      const models = r.models.split(",").map((m) => m.trim()).filter(Boolean);
      if (models.length) out.models = models;
      if (strategy === "weighted" && num(r.weight) !== undefined) out.weight = num(r.weight);
      if (strategy === "failover" && num(r.priority) !== undefined) out.priority = num(r.priority);
      if (semantic && r.topics.length)
        out.topics = r.topics.map((t) => ({
          name: t.name.trim(),
          utterances: t.utterances.split("\n").map((u) => u.trim()).filter(Boolean),
          ...(num(t.threshold) !== undefined ? { threshold: num(t.threshold) } : {}),
        }));
      return out;
    });
    // Keep what this form does not edit (retry, health, aliases).
    const keep: Record<string, unknown> = Object.fromEntries(
      Object.entries(proxy.routing ?? {}).filter(([k]) => !["strategy", "fallback", "threshold"].includes(k)),
    );
    const routing: Record<string, unknown> | null =
      strategy === "single" && rows.length === 1 && !fallback ? (Object.keys(keep).length ? keep : null) : { ...keep, strategy };
    if (routing && fallback) routing.fallback = { ...(proxy.routing?.fallback ?? {}), route: fallback };
    if (routing && semantic && num(threshold) !== undefined) routing.threshold = num(threshold);
    const body: Record<string, unknown> = { routes, routing };
    body.semantic_service = semantic || proxy.prompt_guard ? { ...(proxy.semantic_service ?? {}), provider: embProvider.trim(), model: embModel.trim() } : null;
    try {
      const p = await patch<Proxy>(proxyPath(proxy.id), body);
      setError(null);
      setSaved(`Saved as revision ${p.revision}. Deploy it to put it live.`);
      onSaved(p);
    } catch (err) {
      setSaved(null);
      setError(toApiError(err));
    }
  };

  const upload = async (topic: string, file: File) => {
    try {
      const text = await file.text();
      const p = await api<Proxy>("PUT", `${proxyPath(proxy.id)}/topics/${enc(topic)}/utterances`, text, { contentType: "text/plain" });
      setError(null);
      setSaved(`Uploaded the utterances of ${topic}: revision ${p.revision}.`);
      onSaved(p);
      setRows(fromProxy(p));
    } catch (err) {
      setError(toApiError(err));
    }
  };

  const routeNames = rows.map((r) => r.name || (r.model ? `${r.provider}/${r.model}` : r.provider)).filter(Boolean);
  const savedTopics = new Set(proxy.routes.flatMap((r: any) => (r.topics ?? []).map((t: any) => t.name)));

  return (
    <form className="panel" onSubmit={save} aria-labelledby="routes-title">
      <h2 id="routes-title">Routes and routing</h2>
      <div className="grid2">
        <Select label="Routing strategy" value={strategy} onChange={setStrategy} options={STRATEGIES} error={errorFor(error, "routing.strategy", "routing")} />
        <Select
          label="Fallback route"
          value={fallback}
          onChange={setFallback}
          options={[["", "none"], ...routeNames.map((n): [string, string] => [n, n])]}
          error={errorFor(error, "routing.fallback")}
          hint="Takes requests no route matches and requests whose route failed."
        />
        {semantic ? (
          <>
            <Field label="Similarity threshold (0 to 1)" value={threshold} onChange={setThreshold} error={errorFor(error, "routing.threshold")} hint="Default 0.75." />
            <Field label="Embeddings provider id" value={embProvider} onChange={setEmbProvider} error={errorFor(error, "semantic_service.provider", "semantic_service")} />
            <Field label="Embeddings model" value={embModel} onChange={setEmbModel} error={errorFor(error, "semantic_service.model")} />
          </>
        ) : null}
      </div>
      {rows.map((r, i) => (
        <fieldset key={i} className="route">
          <legend>Route {i + 1}</legend>
          <div className="grid3">
            <Field label="Provider id" value={r.provider} onChange={(v) => update(i, { provider: v })} required error={errorFor(error, `routes[${i}].provider`)} />
            <Field label="Route name" value={r.name} onChange={(v) => update(i, { name: v })} error={errorFor(error, `routes[${i}].name`)} hint="Shown in x-portcullis-route." />
            <Field label="Target model" value={r.model} onChange={(v) => update(i, { model: v })} error={errorFor(error, `routes[${i}].model`)} hint="Overrides the request's model." />
            <Field label="Models served" value={r.models} onChange={(v) => update(i, { models: v })} error={errorFor(error, `routes[${i}].models`)} hint="Comma-separated; default: the provider's." />
            {strategy === "weighted" ? (
              <Field label="Weight" type="number" value={r.weight} onChange={(v) => update(i, { weight: v })} error={errorFor(error, `routes[${i}].weight`)} hint="Default 1; 0 is standby." />
            ) : null}
            {strategy === "failover" ? (
              <Field label="Priority" type="number" value={r.priority} onChange={(v) => update(i, { priority: v })} error={errorFor(error, `routes[${i}].priority`)} hint="Lower first." />
            ) : null}
          </div>
          {semantic ? (
            <div className="topics">
              {r.topics.map((t, k) => (
                <fieldset key={k} className="topic">
                  <legend>Topic {k + 1}</legend>
                  <div className="grid3">
                    <Field label="Topic name" value={t.name} onChange={(v) => update(i, { topics: r.topics.map((x, m) => (m === k ? { ...x, name: v } : x)) })} error={errorFor(error, `routes[${i}].topics[${k}].name`)} />
                    <Field label="Threshold" value={t.threshold} onChange={(v) => update(i, { topics: r.topics.map((x, m) => (m === k ? { ...x, threshold: v } : x)) })} error={errorFor(error, `routes[${i}].topics[${k}].threshold`)} />
                  </div>
                  <Field
                    label="Utterances (one per line)"
                    multiline
                    value={t.utterances}
                    onChange={(v) => update(i, { topics: r.topics.map((x, m) => (m === k ? { ...x, utterances: v } : x)) })}
                    error={errorFor(error, `routes[${i}].topics[${k}].utterances`, `routes[${i}].topics[${k}]`)}
                  />
                  {savedTopics.has(t.name) ? (
                    <label className="upload">
                      Upload utterances file for {t.name}{" "}
                      <input type="file" accept=".txt,text/plain" onChange={(e) => e.target.files?.[0] && upload(t.name, e.target.files[0])} />
                    </label>
                  ) : (
                    <p className="muted">Save the topic first to upload a file of utterances.</p>
                  )}
                  <button type="button" className="small" onClick={() => update(i, { topics: r.topics.filter((_, m) => m !== k) })}>
                    Remove topic
                  </button>
                </fieldset>
              ))}
              <button type="button" className="small" onClick={() => update(i, { topics: [...r.topics, { name: "", utterances: "", threshold: "" }] })}>
                Add topic
              </button>
            </div>
          ) : null}
          {rows.length > 1 ? (
            <button type="button" className="small danger" onClick={() => setRows(rows.filter((_, j) => j !== i))}>
              Remove route {i + 1}
            </button>
          ) : null}
        </fieldset>
      ))}
      <button type="button" onClick={() => setRows([...rows, { provider: proxy.provider, name: "", model: "", models: "", weight: "", priority: "", topics: [], extra: {} }])}>
        Add route
      </button>
      <Alert error={error} shown={["routes", "routing", "semantic_service"]} />
      {saved && !error ? <p role="status">{saved}</p> : null}
      <div className="buttons">
        <button type="submit" className="primary">
          Save routes
        </button>
      </div>
    </form>
  );
}
