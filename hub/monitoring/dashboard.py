"""The /dashboard page: plain HTML and a little JavaScript (no build step, no external scripts).

It fetches /api/monitor/status?window=... and redraws every `refresh_s` seconds: a health card per
integration (grey when idle: no traffic and nothing overdue is not health), the SLA panel (each
operation's availability and latency against the plan's target and the error budget left, over
`sla_window`), a table of the window's figures, a P95 latency chart per integration (inline SVG), the
firing alerts and the open errors. When the first data has been drawn, <body data-ready="1">.
"""

from __future__ import annotations

DASHBOARD_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>DryMix integration health</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.2rem; color: #1d2330; background: #f6f7f9; }
  h1 { font-size: 1.4rem; margin: 0 0 .4rem; } h2 { font-size: 1.1rem; margin: 1.4rem 0 .5rem; }
  .meta { color: #5b6475; font-size: .85rem; }
  .cards { display: flex; gap: .8rem; flex-wrap: wrap; }
  .card { background: #fff; border-radius: 8px; padding: .8rem 1rem; min-width: 15rem; border-left: 8px solid #999;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); }
  .card.green { border-left-color: #1f9d55; } .card.yellow { border-left-color: #e6a700; } .card.red { border-left-color: #d64541; }
  .card.idle { border-left-color: #a0a7b4; color: #5b6475; }
  .badge { display: inline-block; padding: .05rem .5rem; border-radius: 999px; color: #fff; font-size: .8rem; font-weight: 600; }
  .badge.green { background: #1f9d55; } .badge.yellow { background: #e6a700; } .badge.red { background: #d64541; }
  .badge.idle { background: #a0a7b4; }
  .met { color: #1f9d55; } .missed { color: #d64541; font-weight: 600; } .overspent { color: #d64541; font-weight: 600; }
  .badge.critical { background: #8e1b1b; } .badge.high { background: #d64541; } .badge.medium { background: #e6a700; }
  .badge.low, .badge.info { background: #5b6475; }
  table { border-collapse: collapse; background: #fff; width: 100%; font-size: .85rem; }
  th, td { border-bottom: 1px solid #e3e6eb; padding: .3rem .5rem; text-align: right; }
  th:first-child, td:first-child, td.text { text-align: left; }
  .charts { display: flex; gap: .8rem; flex-wrap: wrap; }
  .chart { background: #fff; border-radius: 8px; padding: .5rem; }
  .empty { color: #5b6475; font-style: italic; }
  select { font-size: .9rem; }
</style>
</head>
<body>
<h1>DryMix integration health</h1>
<div class="meta">
  Window <select id="window">
    <option value="5m">5 minutes</option><option value="15m">15 minutes</option><option value="1h" selected>1 hour</option>
    <option value="6h">6 hours</option><option value="24h">24 hours</option><option value="7d">7 days</option>
  </select>
  &middot; updated <span id="updated">never</span> &middot; refreshes every <span id="refresh">?</span> s
  &middot; <a href="/metrics">/metrics</a> <span id="problem"></span>
</div>
<div class="cards" id="cards"></div>
<h2>Active alerts</h2><div id="alerts"></div>
<h2>SLAs over <span id="sla-window">30d</span></h2><div id="sla"></div>
<h2>Figures over the window</h2><div id="figures"></div>
<h2>P95 latency per minute</h2><div class="charts" id="charts"></div>
<h2>Open errors</h2><div id="errors"></div>
<script>
"use strict";
const esc = (v) => String(v === null || v === undefined ? "" : v)
  .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const pct = (v) => v === null || v === undefined ? "–" : (v * 100).toFixed(1) + " %";
const ms = (v) => v === null || v === undefined ? "–" : (v * 1000).toFixed(v < 0.01 ? 2 : 0) + " ms";
const when = (v) => v ? new Date(v).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–";
const num = (v, d) => v === null || v === undefined ? "–" : Number(v).toFixed(d || 0);
let timer = null;

function table(headers, rows) {
  if (!rows.length) return '<p class="empty">none</p>';
  return "<table><thead><tr>" + headers.map((h) => "<th>" + esc(h) + "</th>").join("") + "</tr></thead><tbody>"
    + rows.map((r) => "<tr>" + r.join("") + "</tr>").join("") + "</tbody></table>";
}

function chart(it) {
  const pts = it.series.filter((p) => p.p95_s !== null);
  const w = 320, h = 120, pad = 28;
  let body = '<text x="' + (w / 2) + '" y="' + (h / 2) + '" text-anchor="middle" fill="#5b6475">no calls in the window</text>';
  if (pts.length) {
    const t0 = Date.parse(pts[0].minute), t1 = Math.max(Date.parse(pts[pts.length - 1].minute), t0 + 60000);
    const top = Math.max(...pts.map((p) => p.p95_s)) * 1.1 || 1;
    const xy = pts.map((p) => [pad + (Date.parse(p.minute) - t0) / (t1 - t0) * (w - pad - 6), h - 18 - p.p95_s / top * (h - 30)]);
    body = '<polyline fill="none" stroke="#3367d6" stroke-width="2" points="' + xy.map((q) => q[0].toFixed(1) + "," + q[1].toFixed(1)).join(" ") + '"/>'
      + xy.map((q) => '<circle cx="' + q[0].toFixed(1) + '" cy="' + q[1].toFixed(1) + '" r="2" fill="#3367d6"/>').join("")
      + '<text x="2" y="12" font-size="10" fill="#5b6475">' + esc(ms(top)) + '</text>'
      + '<text x="2" y="' + (h - 4) + '" font-size="10" fill="#5b6475">' + esc(when(pts[0].minute).slice(11, 16)) + '</text>'
      + '<text x="' + (w - 2) + '" y="' + (h - 4) + '" font-size="10" text-anchor="end" fill="#5b6475">' + esc(when(pts[pts.length - 1].minute).slice(11, 16)) + '</text>';
  }
  return '<div class="chart" data-integration="' + esc(it.integration) + '"><strong>' + esc(it.integration) + '</strong> P95 '
    + esc(ms(it.p95_s)) + '<br><svg class="latency" width="' + w + '" height="' + h + '" role="img" aria-label="P95 latency of '
    + esc(it.integration) + '">' + body + '</svg></div>';
}

function slaRow(s) {
  const cls = (met) => met === null ? "" : met ? "met" : "missed";
  const budget = s.calls ? (s.budget_left * 100).toFixed(1) + " %" : "–";
  return ['<td class="text" data-sla="' + esc(s.key) + '">' + esc(s.name) + '</td>', '<td>' + esc(s.calls) + '</td>',
    '<td class="availability ' + cls(s.availability_met) + '">' + esc(s.availability_pct === null ? "no traffic" : num(s.availability_pct, 3) + " %") + '</td>',
    '<td>' + esc(s.target_pct) + ' %</td>',
    '<td class="latency ' + cls(s.latency_met) + '">P' + esc(Math.round(s.latency_quantile * 100)) + ' ' + esc(ms(s.latency_s)) + '</td>',
    '<td>&lt; ' + esc(ms(s.latency_target_s)) + '</td>',
    '<td class="budget' + (s.budget_left < 0 ? " overspent" : "") + '">' + esc(budget) + '</td>',
    '<td>' + esc(s.burn_rate === null ? "–" : num(s.burn_rate, 2) + "x") + '</td>'];
}

function render(d) {
  document.getElementById("refresh").textContent = d.refresh_s;
  document.getElementById("updated").textContent = when(d.generated_at);
  document.getElementById("cards").innerHTML = d.integrations.map((it) =>
    '<div class="card ' + esc(it.health) + '" data-integration="' + esc(it.integration) + '" data-health="' + esc(it.health) + '">'
    + '<strong>' + esc(it.integration) + '</strong> <span class="badge ' + esc(it.health) + '">' + esc(it.health) + '</span><br>'
    + 'success ' + esc(pct(it.success_rate)) + ' &middot; P95 ' + esc(ms(it.p95_s)) + '<br>'
    + 'last success ' + esc(when(it.last_success_at)) + '<br>'
    + (it.health_reasons.length ? '<small>' + it.health_reasons.map(esc).join("; ") + '</small>' : '<small>all thresholds met</small>')
    + '</div>').join("");
  document.getElementById("alerts").innerHTML = table(["Rule", "Integration", "Severity", "Summary", "Since", "Sent"],
    d.alerts.map((a) => ['<td class="text">' + esc(a.rule) + '</td>', '<td class="text">' + esc(a.integration) + '</td>',
      '<td class="text"><span class="badge ' + esc(a.severity) + '">' + esc(a.severity) + '</span></td>',
      '<td class="text">' + esc(a.summary) + '</td>', '<td>' + esc(when(a.started_at)) + '</td>', '<td>' + esc(a.notifications_sent) + '</td>']));
  document.getElementById("sla-window").textContent = d.sla_window;
  document.getElementById("sla").innerHTML = table(["Operation", "Calls", "Availability", "Target", "Latency", "Latency target",
    "Error budget left", "Burn rate"], d.sla.map(slaRow));
  document.getElementById("figures").innerHTML = table(
    ["Integration", "Calls", "Success", "Errors", "Error rate", "P50", "P95", "P99", "429s", "Uptime", "ops/s",
     "Cache hits", "Webhooks in", "Processing P95", "Backlog", "Retries queued", "Open errors", "Last error"],
    d.integrations.map((it) => ['<td>' + esc(it.integration) + '</td>', '<td>' + esc(it.calls) + '</td>',
      '<td>' + esc(it.successes) + '</td>', '<td>' + esc(it.errors) + '</td>', '<td>' + esc(pct(it.error_rate)) + '</td>',
      '<td>' + esc(ms(it.p50_s)) + '</td>', '<td class="p95">' + esc(ms(it.p95_s)) + '</td>', '<td>' + esc(ms(it.p99_s)) + '</td>',
      '<td>' + esc(it.rate_limited) + '</td>', '<td>' + esc(it.uptime_pct === null ? "–" : num(it.uptime_pct, 1) + " %") + '</td>',
      '<td>' + esc(num(it.throughput_per_s, 3)) + '</td>', '<td>' + esc(pct(it.cache_hit_rate)) + '</td>',
      '<td>' + esc(it.webhooks_received) + '</td>', '<td>' + esc(ms(it.webhook_processing_p95_s)) + '</td>',
      '<td class="backlog">' + esc(it.webhook_backlog) + '</td>', '<td>' + esc(it.pending_retries) + '</td>',
      '<td>' + esc(it.open_errors) + '</td>', '<td>' + esc(when(it.last_error_at)) + '</td>']));
  document.getElementById("charts").innerHTML = d.integrations.map(chart).join("");
  document.getElementById("errors").innerHTML = table(["#", "Integration", "Type", "Severity", "Status", "Message", "Created", "Next retry"],
    d.open_errors.map((e) => ['<td>' + esc(e.id) + '</td>', '<td class="text">' + esc(e.integration) + '</td>',
      '<td class="text">' + esc(e.error_type) + '</td>', '<td class="text">' + esc(e.severity) + '</td>',
      '<td class="text">' + esc(e.status) + '</td>', '<td class="text">' + esc(e.message) + '</td>',
      '<td>' + esc(when(e.created_at)) + '</td>', '<td>' + esc(when(e.next_retry_at)) + '</td>']));
  document.body.dataset.ready = "1";
}

async function load() {
  const windowSel = document.getElementById("window");
  let refresh = 15;
  try {
    const res = await fetch("/api/monitor/status?window=" + encodeURIComponent(windowSel.value), { cache: "no-store" });
    if (!res.ok) throw new Error("HTTP " + res.status);
    const d = await res.json();
    refresh = d.refresh_s;
    render(d);
    document.getElementById("problem").textContent = "";
  } catch (err) {
    document.getElementById("problem").textContent = "· could not load: " + err.message;
  }
  clearTimeout(timer);
  timer = setTimeout(load, refresh * 1000);
}
document.getElementById("window").addEventListener("change", load);
load();
</script>
</body>
</html>
"""
