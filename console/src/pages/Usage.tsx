// Usage: requests and tokens per proxy and per key over the last 24
// hours (by UTC hour) or days (by UTC day), from what managed gateways
// report in their heartbeats (GET /spend?group_by=hour|day,...).
import { useState } from "react";
import { ApiError, api, get } from "../api";
import { Alert, Empty, Loading, Select, toApiError, useLoad } from "../ui";
import { href } from "../router";

interface Row {
  day?: string;
  hour?: string;
  proxy_id?: string;
  key_id?: string;
  key_name?: string;
  requests: number;
  input_tokens: number;
  output_tokens: number;
  cost: number;
}

const day = (d: Date) => d.toISOString().slice(0, 10);
/** `2026-12-04T13:00`, admin's hour buckets (UTC). */
const hourOf = (d: Date) => d.toISOString().slice(0, 13) + ":00";

export function Usage() {
  const [range, setRange] = useState("24h");
  const [by, setBy] = useState("proxy");
  const [metric, setMetric] = useState<"requests" | "tokens">("tokens");
  const hourly = range === "24h";
  const now = new Date();
  // The buckets on the chart's axis: the last 24 hours, or the days.
  const buckets: string[] = [];
  if (hourly) for (let i = 23; i >= 0; i--) buckets.push(hourOf(new Date(now.getTime() - i * 3600_000)));
  else for (let i = Number(range) - 1; i >= 0; i--) buckets.push(day(new Date(now.getTime() - i * 86400_000)));
  const from = hourly ? buckets[0].slice(0, 10) : buckets[0];
  const spend = useLoad(
    () => get<{ items: Row[]; currency: string }>(`/spend?group_by=${hourly ? "hour" : "day"},${by}&from=${from}&to=${day(now)}`),
    [range, by],
  );
  const bucketOf = (r: Row) => (hourly ? r.hour : r.day) ?? "";
  const rows = (spend.data?.items ?? []).filter((r) => buckets.includes(bucketOf(r)));
  const nameOf = (r: Row) => (by === "proxy" ? r.proxy_id : r.key_name || r.key_id) ?? "?";
  const series = [...new Set(rows.map(nameOf))];
  const value = (r: Row) => (metric === "requests" ? r.requests : r.input_tokens + r.output_tokens);
  const totals = series.map((s) => ({
    name: s,
    perDay: buckets.map((b) => rows.filter((r) => bucketOf(r) === b && nameOf(r) === s).reduce((a, r) => a + value(r), 0)),
  }));
  const thisHour = hourly ? rows.filter((r) => r.hour === hourOf(now)) : [];
  return (
    <section aria-labelledby="usage-title">
      <h1 id="usage-title">Usage</h1>
      <div className="filters">
        <Select label="Range" value={range} onChange={setRange} options={[["24h", "last 24 hours, by hour"], ["7", "last 7 days"], ["30", "last 30 days"]]} />
        <Select label="Per" value={by} onChange={setBy} options={[["proxy", "proxy"], ["key", "key"]]} />
        <Select label="Metric" value={metric} onChange={(v) => setMetric(v as "requests" | "tokens")} options={[["tokens", "tokens (in + out)"], ["requests", "requests"]]} />
      </div>
      <p className="muted">
        By UTC {hourly ? "hour" : "day"}, from the counters managed gateways send with their heartbeats (every 5 s).
        {hourly ? (
          <>
            {" "}
            This hour so far: <strong data-testid="this-hour">{thisHour.reduce((a, r) => a + r.requests, 0)} request(s), {thisHour.reduce((a, r) => a + r.input_tokens + r.output_tokens, 0)} tokens</strong>.
          </>
        ) : null}
      </p>
      <Alert error={spend.error} />
      {spend.loading && !spend.data ? <Loading what="usage" /> : null}
      {spend.data && rows.length === 0 ? <Empty>No traffic reported in this range.</Empty> : null}
      {totals.length ? <Chart days={buckets} series={totals} label={`${metric} per ${by} and ${hourly ? "hour" : "day"}`} /> : null}
      {rows.length ? (
        <table>
          <caption className="visually-hidden">
            Usage per {by} and {hourly ? "hour" : "day"}
          </caption>
          <thead>
            <tr>
              <th>{hourly ? "Hour (UTC)" : "Day"}</th>
              <th>{by === "proxy" ? "Proxy" : "Key"}</th>
              <th>Requests</th>
              <th>Input tokens</th>
              <th>Output tokens</th>
              <th>Cost ({spend.data?.currency})</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((r, i) => (
              <tr key={i}>
                <td>{bucketOf(r)}</td>
                <td>{by === "proxy" ? r.proxy_id : r.key_name || r.key_id}</td>
                <td>{r.requests}</td>
                <td>{r.input_tokens}</td>
                <td>{r.output_tokens}</td>
                <td>{r.cost.toFixed(6)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      <AppSpend from={hourly ? day(new Date(now.getTime() - 86400_000)) : from} to={day(now)} />
    </section>
  );
}

interface AppRow {
  application_id: string | null;
  application_name: string | null;
  requests: number;
  input_tokens: number;
  output_tokens: number;
  cost: number;
}

/** Spend per application over the range's days (GET /spend?group_by=
 * application), with the same query as a CSV download. Rows without an
 * application are the proxies' own keys. */
function AppSpend({ from, to }: { from: string; to: string }) {
  const query = `/spend?group_by=application&from=${from}&to=${to}`;
  const spend = useLoad(() => get<{ items: AppRow[]; currency: string }>(query), [query]);
  const [error, setError] = useState<ApiError | null>(null);
  // The token must not go in a URL (a link would carry it into history
  // and logs), so the CSV is fetched with the Authorization header and
  // handed to the browser as a Blob.
  const download = async () => {
    try {
      const csv = await api<string>("GET", `${query}&format=csv`, undefined, { raw: true });
      const url = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = `spend-by-application-${from}-${to}.csv`;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
      setError(null);
    } catch (err) {
      setError(toApiError(err));
    }
  };
  const rows = spend.data?.items ?? [];
  return (
    <section aria-labelledby="app-spend-title">
      <div className="page-head">
        <h2 id="app-spend-title">Spend per application</h2>
        <button type="button" className="primary" onClick={download}>
          Download CSV
        </button>
      </div>
      <p className="muted">
        UTC days {from} to {to}, by the application whose key made the requests.
      </p>
      <Alert error={spend.error ?? error} />
      {spend.loading && !spend.data ? <Loading what="spend per application" /> : null}
      {spend.data && rows.length === 0 ? <Empty>No traffic reported in this range.</Empty> : null}
      {rows.length ? (
        <table data-testid="app-spend">
          <caption className="visually-hidden">Spend per application</caption>
          <thead>
            <tr>
              <th>Application</th>
              <th>Requests</th>
              <th>Input tokens</th>
              <th>Output tokens</th>
              <th>Cost ({spend.data?.currency})</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((r) => (
              <tr key={r.application_id ?? ""}>
                <td>{r.application_id ? <a href={href("applications", r.application_id)}>{r.application_name ?? r.application_id}</a> : <span className="muted">proxies' own keys</span>}</td>
                <td>{r.requests}</td>
                <td>{r.input_tokens}</td>
                <td>{r.output_tokens}</td>
                <td>{r.cost.toFixed(6)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </section>
  );
}

const COLORS = ["#2f6feb", "#d4731c", "#2da44e", "#a371f7", "#cf222e", "#0aa3a3"];

/** Stacked bars per day, one colour per series; the table below holds the numbers. */
function Chart({ days, series, label }: { days: string[]; series: { name: string; perDay: number[] }[]; label: string }) {
  const max = Math.max(1, ...days.map((_, i) => series.reduce((a, s) => a + s.perDay[i], 0)));
  const w = 640;
  const h = 200;
  const bw = Math.max(4, w / days.length - 6);
  return (
    <figure className="chart">
      <svg viewBox={`0 0 ${w} ${h + 20}`} role="img" aria-label={label}>
        {days.map((d, i) => {
          let y = h;
          return (
            <g key={d}>
              {series.map((s, k) => {
                const bh = (s.perDay[i] / max) * (h - 10);
                y -= bh;
                return (
                  <rect key={s.name} x={i * (w / days.length) + 3} y={y} width={bw} height={bh} fill={COLORS[k % COLORS.length]}>
                    <title>{`${d} ${s.name}: ${s.perDay[i]}`}</title>
                  </rect>
                );
              })}
              {i % Math.ceil(days.length / 8) === 0 ? (
                <text x={i * (w / days.length) + 3} y={h + 14} fontSize="10" fill="currentColor">
                  {d.length > 10 ? d.slice(11, 16) : d.slice(5)}
                </text>
              ) : null}
            </g>
          );
        })}
      </svg>
      <figcaption>
        {series.map((s, k) => (
          <span key={s.name} className="legend">
            <span className="swatch" style={{ background: COLORS[k % COLORS.length] }} /> {s.name}
          </span>
        ))}
        <span className="muted"> · max {max}</span>
      </figcaption>
    </figure>
  );
}
