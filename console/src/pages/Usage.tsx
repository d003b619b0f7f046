// Usage: requests and tokens per proxy and per key, by UTC day, from
// what managed gateways report in their heartbeats (GET /spend).
import { useState } from "react";
import { get } from "../api";
import { Alert, Empty, Loading, Select, useLoad } from "../ui";

interface Row {
  day: string;
  proxy_id?: string;
  key_id?: string;
  key_name?: string;
  requests: number;
  input_tokens: number;
  output_tokens: number;
  cost: number;
}

const day = (d: Date) => d.toISOString().slice(0, 10);

export function Usage() {
  const [range, setRange] = useState("7");
  const [by, setBy] = useState("proxy");
  const [metric, setMetric] = useState<"requests" | "tokens">("tokens");
  const to = new Date();
  const from = new Date(to.getTime() - (Number(range) - 1) * 86400_000);
  const spend = useLoad(
    () => get<{ items: Row[]; currency: string }>(`/spend?group_by=day,${by}&from=${day(from)}&to=${day(to)}`),
    [range, by],
  );
  const rows = spend.data?.items ?? [];
  const series = [...new Set(rows.map((r) => (by === "proxy" ? r.proxy_id : r.key_name || r.key_id) ?? "?"))];
  const days: string[] = [];
  for (let d = new Date(from); d <= to; d = new Date(d.getTime() + 86400_000)) days.push(day(d));
  const value = (r: Row) => (metric === "requests" ? r.requests : r.input_tokens + r.output_tokens);
  const totals = series.map((s) => ({
    name: s,
    perDay: days.map((d) =>
      rows.filter((r) => r.day === d && ((by === "proxy" ? r.proxy_id : r.key_name || r.key_id) ?? "?") === s).reduce((a, r) => a + value(r), 0),
    ),
  }));
  return (
    <section aria-labelledby="usage-title">
      <h1 id="usage-title">Usage</h1>
      <div className="filters">
        <Select label="Range" value={range} onChange={setRange} options={[["1", "today (UTC)"], ["7", "last 7 days"], ["30", "last 30 days"]]} />
        <Select label="Per" value={by} onChange={setBy} options={[["proxy", "proxy"], ["key", "key"]]} />
        <Select label="Metric" value={metric} onChange={(v) => setMetric(v as "requests" | "tokens")} options={[["tokens", "tokens (in + out)"], ["requests", "requests"]]} />
      </div>
      <p className="muted">By UTC day, from the counters managed gateways send with their heartbeats (every 5 s).</p>
      <Alert error={spend.error} />
      {spend.loading && !spend.data ? <Loading what="usage" /> : null}
      {spend.data && rows.length === 0 ? <Empty>No traffic reported in this range.</Empty> : null}
      {totals.length ? <Chart days={days} series={totals} label={`${metric} per ${by} and day`} /> : null}
      {rows.length ? (
        <table>
          <caption className="visually-hidden">Usage per {by} and day</caption>
          <thead>
            <tr>
              <th>Day</th>
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
                <td>{r.day}</td>
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
              {days.length <= 10 ? (
                <text x={i * (w / days.length) + 3} y={h + 14} fontSize="10" fill="currentColor">
                  {d.slice(5)}
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
