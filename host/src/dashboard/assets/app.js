// The dashboard's one script: no framework, nothing fetched from elsewhere. It renders
// the page its path names from the JSON of /dashboard/api/, follows the job events
// (/dashboard/api/events) to refresh what is shown, and polls slowly besides, which
// also catches what other daemons of a shared store did. Text from the daemon is only
// ever set as text (never parsed as HTML). Actions send X-Honeydew-Csrf, which the
// daemon requires of every POST from a browser.
"use strict";

const POLL_MS = 15000;
const STATES = ["pending", "running", "completed", "failed", "cancelled"];

// ---- small helpers ----

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, String(value));
  }
  return node;
}

class Unauthorized extends Error {}

async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (response.status === 401) throw new Unauthorized();
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

async function act(path) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-Honeydew-Csrf": "1", Accept: "application/json" },
  });
  if (response.status === 401) throw new Unauthorized();
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function notice(text, isError) {
  const node = document.getElementById("notice");
  if (!node) return;
  node.textContent = text;
  node.classList.toggle("error", Boolean(isError));
  node.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { node.hidden = true; }, 4000);
}

function statusBadge(status) {
  return el("span", { class: `status status-${status}`, "data-status": status, text: status });
}

function when(iso) {
  if (!iso) return el("span", { class: "muted", text: "—" });
  const at = new Date(iso);
  return el("time", { datetime: iso, title: at.toLocaleString(), text: relative(at) });
}

function relative(at) {
  const seconds = Math.round((at.getTime() - Date.now()) / 1000);
  const size = Math.abs(seconds);
  let text;
  if (size < 60) text = `${size} s`;
  else if (size < 3600) text = `${Math.round(size / 60)} min`;
  else if (size < 86400) text = `${Math.round(size / 3600)} h`;
  else return at.toLocaleString();
  return seconds > 0 ? `in ${text}` : `${text} ago`;
}

function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const seconds = Math.round((ms % 60000) / 1000);
  return `${Math.floor(ms / 60000)} min${seconds ? ` ${seconds} s` : ""}`;
}

function number(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString("en");
}

function shownBody(body) {
  if (!body) return el("p", { class: "muted", text: "none" });
  const note = body.truncated ? ` (first part of ${number(body.bytes)} bytes)` : ` (${number(body.bytes)} bytes)`;
  if (body.text !== undefined) {
    let text = body.text;
    try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON: as is */ }
    return el("div", {}, el("pre", { text }), el("p", { class: "muted", text: `text${note}` }));
  }
  return el("div", {}, el("pre", { text: body.hex }), el("p", { class: "muted", text: `hex, not UTF-8${note}` }));
}

function jobLink(id) {
  return el("a", { class: "id", href: `/dashboard/jobs/${id}`, text: id });
}

// ---- the views: each renders into `root` and returns a refresh function ----

async function overviewView(root) {
  const data = await api("/dashboard/api/overview");
  root.replaceChildren(
    el("h1", { text: "Overview" }),
    el("div", { class: "cards" },
      STATES.map((state) => el("div", { class: "card", "data-state": state },
        el("a", { href: `/dashboard/jobs?status=${state}` },
          el("div", { class: "label", text: state }),
          el("div", { class: "value", "data-count": state, text: number(data.states[state]) })))),
      el("div", { class: "card" },
        el("div", { class: "label", text: "busy workers here" }),
        el("div", { class: "value", text: `${data.running_here} / ${data.workers}` }))),
    el("div", { class: "charts" },
      chart("Completed per minute, last hour", data, "completed"),
      chart("Failed per minute, last hour", data, "failed")),
    el("h2", { text: "By command" }),
    commandTable(data),
    el("h2", { text: "Paused" }),
    pausesList(data.pauses));
}

function chart(title, data, key) {
  const since = new Date(data.since).getTime();
  const width = 600;
  const height = 140;
  const bottom = 2;
  const slots = 60;
  const values = new Array(slots).fill(0);
  for (const minute of data.minutes) {
    const slot = Math.floor((new Date(minute.minute).getTime() - since) / 60000);
    values[Math.min(Math.max(slot, 0), slots - 1)] += minute[key];
  }
  const max = Math.max(1, ...values);
  const total = values.reduce((a, b) => a + b, 0);
  const plot = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": `${title}: ${total}` });
  for (const fraction of [0, 0.5, 1]) {
    const y = (height - bottom) * (1 - fraction);
    plot.append(svg("line", { class: "grid", x1: 0, x2: width, y1: y, y2: y }));
  }
  const step = width / slots;
  values.forEach((value, slot) => {
    if (!value) return;
    const barHeight = ((height - bottom) * value) / max;
    const bar = svg("rect", {
      class: `bar-${key}`,
      x: slot * step + 1,
      y: height - bottom - barHeight,
      width: Math.max(step - 2, 1),
      height: barHeight,
    });
    bar.append(svg("title", { text: `${value} ${key}` }));
    plot.append(bar);
  });
  // Labels in HTML, not in the stretched SVG, so they stay legible at any width.
  return el("div", { class: "panel chart", "data-chart": key },
    el("div", { class: "caption" }, el("strong", { text: title }), el("span", { text: `${number(total)} in all` })),
    plot,
    el("div", { class: "caption axis-row" },
      el("span", { text: "−60 min" }), el("span", { text: `top ${number(max)}/min` }), el("span", { text: "now" })));
}

function commandTable(data) {
  const byCommand = new Map();
  for (const count of data.counts) {
    if (!byCommand.has(count.command)) byCommand.set(count.command, {});
    byCommand.get(count.command)[count.status] = count.count;
  }
  const paused = new Set(data.pauses.map((pause) => pause.target));
  if (!byCommand.size) return el("p", { class: "empty panel", text: "No jobs yet." });
  return el("div", { class: "table-wrap" }, el("table", {},
    el("thead", {}, el("tr", {}, el("th", { text: "command" }), STATES.map((s) => el("th", { class: "num", text: s })), el("th", { text: "" }))),
    el("tbody", {}, [...byCommand.entries()].map(([command, counts]) => el("tr", { "data-command": command },
      el("td", {}, el("a", { href: `/dashboard/jobs?command=${encodeURIComponent(command)}`, text: command })),
      STATES.map((s) => el("td", { class: "num", text: number(counts[s] || 0) })),
      el("td", {}, pauseButton(command, paused.has(command))))))));
}

function pauseButton(target, paused) {
  return el("button", {
    type: "button",
    class: paused ? "" : "link",
    "data-action": paused ? "resume" : "pause",
    title: paused ? `resume ${target}` : `pause ${target}: its pending jobs wait`,
    text: paused ? "Resume" : "Pause",
    onclick: (event) => runAction(event.target, `/dashboard/api/pauses/${encodeURIComponent(target)}/${paused ? "resume" : "pause"}`,
      paused ? `${target} resumed` : `${target} paused`),
  });
}

function pausesList(pauses) {
  if (!pauses.length) return el("p", { class: "muted", text: "Nothing is paused." });
  return el("ul", {}, pauses.map((pause) => el("li", {},
    el("code", { text: pause.target }), " since ", when(pause.paused_at), " ", pauseButton(pause.target, true))));
}

async function runAction(button, path, done) {
  button.disabled = true;
  try {
    await act(path);
    notice(done);
    scheduleRefresh(0);
  } catch (err) {
    if (err instanceof Unauthorized) return toLogin();
    notice(err.message, true);
  } finally {
    button.disabled = false;
  }
}

async function jobsView(root) {
  const params = new URLSearchParams(location.search);
  const status = el("select", { name: "status", "aria-label": "status" },
    el("option", { value: "", text: "any status" }),
    STATES.map((s) => el("option", { value: s, text: s, selected: params.get("status") === s })));
  const command = el("select", { name: "command", "aria-label": "command" }, el("option", { value: "", text: "any command" }));
  const table = el("div", { id: "jobs-table" });
  const more = el("div", { class: "actions" });
  const apply = () => {
    const next = new URLSearchParams();
    if (status.value) next.set("status", status.value);
    if (command.value) next.set("command", command.value);
    history.replaceState(null, "", `/dashboard/jobs${next.toString() ? `?${next}` : ""}`);
    seen = null;
    scheduleRefresh(0);
  };
  status.addEventListener("change", apply);
  command.addEventListener("change", apply);
  root.replaceChildren(
    el("h1", { text: "Jobs" }),
    el("div", { class: "filters" },
      el("label", {}, "Status", status),
      el("label", {}, "Command", command)),
    table,
    more);
  let seen = null;
  let commandsKnown = false;
  const refresh = async () => {
    const query = new URLSearchParams(location.search);
    query.set("limit", "50");
    const data = await api(`/dashboard/api/jobs?${query}`);
    if (!commandsKnown) {
      const wanted = query.get("command");
      const names = new Set(data.commands);
      if (wanted) names.add(wanted);
      for (const name of [...names].sort()) command.append(el("option", { value: name, text: name, selected: name === wanted }));
      commandsKnown = true;
    }
    const fresh = seen ? data.jobs.filter((job) => !seen.has(job.id)).map((job) => job.id) : [];
    seen = new Set(data.jobs.map((job) => job.id));
    table.replaceChildren(jobsTable(data.jobs, new Set(fresh)));
    const page = (cursor) => () => {
      const next = new URLSearchParams(location.search);
      if (cursor) next.set("cursor", cursor);
      else next.delete("cursor");
      history.replaceState(null, "", `/dashboard/jobs${next.toString() ? `?${next}` : ""}`);
      seen = null;
      scheduleRefresh(0);
    };
    more.replaceChildren(
      query.get("cursor") ? el("button", { type: "button", id: "newest", text: "← Newest", onclick: page(null) }) : "",
      data.next_cursor ? el("button", { type: "button", id: "older", text: "Older →", onclick: page(data.next_cursor) }) : "");
  };
  await refresh();
  return refresh;
}

function jobsTable(jobs, fresh) {
  if (!jobs.length) return el("p", { class: "empty panel", text: "No job matches." });
  return el("div", { class: "table-wrap" }, el("table", { class: "jobs" },
    el("thead", {}, el("tr", {},
      el("th", { text: "job" }), el("th", { text: "command" }), el("th", { text: "status" }),
      el("th", { class: "wide-only", text: "submitted" }), el("th", { class: "wide-only", text: "finished" }),
      el("th", { class: "num wide-only", text: "retries" }), el("th", { class: "wide-only", text: "error" }))),
    el("tbody", {}, jobs.map((job) => el("tr", { "data-job-id": job.id, "data-status": job.status, class: fresh.has(job.id) ? "fresh" : null },
      el("td", {}, jobLink(job.id)),
      el("td", {}, el("code", { text: job.command })),
      el("td", {}, statusBadge(job.status)),
      el("td", { class: "wide-only" }, when(job.created_at)),
      el("td", { class: "wide-only" }, when(job.completed_at)),
      el("td", { class: "num wide-only", text: `${job.retry_count}/${job.max_retries}` }),
      el("td", { class: "wide-only" }, job.error_kind ? el("span", { class: "error", title: job.error || "", text: job.error_kind }) : ""))))));
}

async function jobView(root, id) {
  const refresh = async () => {
    const job = await api(`/dashboard/api/jobs/${encodeURIComponent(id)}`);
    const actions = el("div", { class: "actions" });
    if (job.status === "pending" || job.status === "running") {
      actions.append(el("button", {
        type: "button", class: "danger", id: "cancel", "data-action": "cancel", text: "Cancel",
        onclick: (event) => runAction(event.target, `/dashboard/api/jobs/${job.id}/cancel`, job.status === "running" ? "cancelling: the sandbox is told to stop" : "cancelled"),
      }));
    }
    if (job.status === "failed" || job.status === "cancelled") {
      actions.append(el("button", {
        type: "button", id: "retry", "data-action": "retry", text: "Retry",
        onclick: (event) => runAction(event.target, `/dashboard/api/jobs/${job.id}/retry`, "pending again, with a fresh retry budget"),
      }));
    }
    const plugin = job.plugin ? `${job.plugin.name} ${job.plugin.version}` : "—";
    root.replaceChildren(
      el("p", {}, el("a", { href: "/dashboard/jobs", text: "← Jobs" })),
      el("h1", {}, el("span", { class: "id", text: job.id }), " ", statusBadge(job.status)),
      actions,
      el("div", { class: "panel" }, el("dl", { class: "fields" },
        el("dt", { text: "command" }), el("dd", {}, el("code", { text: job.command })),
        el("dt", { text: "status" }), el("dd", { id: "job-status", "data-status": job.status, text: job.status }),
        job.explanation ? [el("dt", { text: "now" }), el("dd", { text: job.explanation })] : [],
        el("dt", { text: "priority" }), el("dd", { text: job.priority }),
        el("dt", { text: "submitted" }), el("dd", {}, when(job.created_at)),
        el("dt", { text: "eligible" }), el("dd", {}, when(job.run_at)),
        el("dt", { text: "started" }), el("dd", {}, when(job.started_at)),
        el("dt", { text: "finished" }), el("dd", {}, when(job.completed_at)),
        el("dt", { text: "retries" }), el("dd", { text: `${job.retry_count} of ${job.max_retries}${job.snooze_count ? `, snoozed ${job.snooze_count}×` : ""}` }),
        el("dt", { text: "plugin" }), el("dd", { text: plugin }),
        job.plugin ? [el("dt", { text: "sha256" }), el("dd", { class: "mono", text: job.plugin.sha256 })] : [],
        job.error ? [el("dt", { text: "error" }), el("dd", { class: "error", text: `${job.error_kind}: ${job.error}` })] : [],
        job.dependencies.length ? [el("dt", { text: "after" }), el("dd", {}, job.dependencies.map((dep) => el("div", {}, jobLink(dep.id), " ", statusBadge(dep.status))))] : [])),
      el("div", { class: "two" },
        el("div", {}, el("h2", { text: "Payload" }), shownBody(job.payload)),
        el("div", {}, el("h2", { text: "Result" }), shownBody(job.result))),
      el("h2", { text: "Attempts" }),
      attemptsTable(job.attempts),
      renderLogAndProgress(job));
  };
  await refresh();
  return refresh;
}

function attemptsTable(attempts) {
  if (!attempts.length) return el("p", { class: "muted", text: "Not run yet." });
  return el("div", { class: "table-wrap" }, el("table", { class: "attempts" },
    el("thead", {}, el("tr", {},
      el("th", { class: "num", text: "#" }), el("th", { text: "outcome" }), el("th", { class: "num", text: "duration" }),
      el("th", { class: "num", text: "fuel" }), el("th", { class: "num wide-only", text: "worker" }), el("th", { text: "error" }))),
    el("tbody", {}, attempts.map((attempt) => el("tr", { "data-attempt": attempt.attempt },
      el("td", { class: "num", text: attempt.attempt }),
      el("td", {}, attempt.outcome ? el("span", { text: attempt.outcome }) : el("span", { class: "status status-running", text: "running" })),
      el("td", { class: "num", text: duration(attempt.duration_ms) }),
      el("td", { class: "num", text: number(attempt.fuel_used) }),
      el("td", { class: "num wide-only", text: attempt.worker_id ?? "—" }),
      el("td", {}, attempt.error ? el("span", { class: "error", text: `${attempt.error_kind}: ${attempt.error}` }) : ""))))));
}

// Each attempt's log (its latest attempts' tails, as the store keeps them) and the
// job's latest progress, read again whenever the event stream says its output moved.
function renderLogAndProgress(job) {
  const parts = [];
  if (job.progress) {
    const { done, total, message } = job.progress;
    parts.push(el("h2", { text: "Progress" }),
      el("p", { id: "job-progress" },
        el("progress", { max: total || 1, value: done || 0 }), " ",
        total ? `${number(done)} of ${number(total)}` : number(done),
        message ? ` · ${message}` : ""));
  }
  const logged = (job.attempts || []).filter((attempt) => attempt.log);
  if (logged.length) {
    parts.push(el("h2", { text: "Log" }),
      ...logged.map((attempt) => el("div", { "data-log-attempt": attempt.attempt },
        el("p", { class: "muted", text: `attempt ${attempt.attempt}` }), el("pre", { text: attempt.log }))));
  }
  return parts.length ? el("section", { id: "job-log" }, parts) : "";
}

async function schedulesView(root) {
  const data = await api("/dashboard/api/schedules");
  root.replaceChildren(
    el("h1", { text: "Schedules" }),
    data.schedules.length ? el("div", { class: "table-wrap" }, el("table", { class: "schedules" },
      el("thead", {}, el("tr", {},
        el("th", { text: "name" }), el("th", { text: "cron" }), el("th", { text: "command" }),
        el("th", { text: "next run" }), el("th", { class: "wide-only", text: "last run" }), el("th", { text: "" }))),
      el("tbody", {}, data.schedules.map((schedule) => el("tr", { "data-schedule": schedule.name },
        el("td", {}, el("strong", { text: schedule.name }), schedule.enabled ? "" : el("div", { class: "muted", text: "paused" }),
          schedule.last_error ? el("div", { class: "error", text: schedule.last_error }) : ""),
        el("td", {}, el("code", { text: schedule.cron }), el("div", { class: "muted", text: schedule.timezone })),
        el("td", {}, el("code", { text: schedule.command })),
        el("td", { "data-next-run": schedule.next_run_at || "" }, schedule.enabled ? when(schedule.next_run_at) : el("span", { class: "muted", text: "paused" })),
        el("td", { class: "wide-only" }, when(schedule.last_run_at), schedule.last_job_id ? el("div", {}, jobLink(schedule.last_job_id)) : ""),
        el("td", {}, el("button", {
          type: "button", class: "link", text: schedule.enabled ? "Pause" : "Resume",
          onclick: (event) => runAction(event.target, `/dashboard/api/schedules/${encodeURIComponent(schedule.name)}/${schedule.enabled ? "pause" : "resume"}`,
            `${schedule.name} ${schedule.enabled ? "paused" : "resumed"}`),
        })))))))
      : el("p", { class: "empty panel", text: "No schedules. Add one with `honeydew schedule add`." }));
}

async function pluginsView(root) {
  const data = await api("/dashboard/api/plugins");
  const paused = new Set(data.pauses);
  root.replaceChildren(
    el("h1", { text: "Plugins" }),
    data.plugins.length ? el("div", { class: "table-wrap" }, el("table", { class: "plugins" },
      el("thead", {}, el("tr", {},
        el("th", { text: "plugin" }), el("th", { text: "commands" }), el("th", { text: "limits" }),
        el("th", { text: "network grants" }), el("th", { text: "" }))),
      el("tbody", {}, data.plugins.map((plugin) => el("tr", { "data-plugin": plugin.name },
        el("td", {}, el("strong", { text: plugin.name }), ` ${plugin.version}`,
          el("div", { class: "mono muted", title: plugin.sha256, text: `sha256 ${plugin.sha256.slice(0, 16)}…` })),
        el("td", {}, el("div", { class: "tags" }, plugin.commands.map((command) => el("span", { class: "tag", text: command })))),
        el("td", { class: "muted nowrap" },
          `fuel ${number(plugin.limits.fuel)}`, el("br"),
          `memory ${plugin.limits.memory_mib} MiB`, el("br"),
          `timeout ${duration(plugin.limits.timeout_ms)}`, el("br"),
          `retries ${plugin.limits.max_retries}`, el("br"),
          plugin.concurrency.plugin ? `at most ${plugin.concurrency.plugin} at once` : "no concurrency limit", el("br"),
          ...Object.entries(plugin.concurrency.commands).flatMap(([command, limit]) => [`${command}: at most ${limit}`, el("br")]),
          `${plugin.concurrency.per_key} per concurrency key`),
        el("td", {}, plugin.allowed_hosts.length
          ? el("div", { class: "tags" }, plugin.allowed_hosts.map((host) => el("span", { class: "tag", text: host })))
          : el("span", { class: "muted", text: "no network" })),
        el("td", {}, pauseButton(plugin.name, paused.has(plugin.name))))))))
      : el("p", { class: "empty panel", text: "No plugin is loaded." }),
    el("h2", { text: "Not loaded" }),
    data.skipped.length ? el("div", { class: "table-wrap" }, el("table", { class: "skipped" },
      el("thead", {}, el("tr", {}, el("th", { text: "file" }), el("th", { text: "why" }))),
      el("tbody", {}, data.skipped.map((skipped) => el("tr", { "data-skipped": skipped.name || "" },
        el("td", {}, el("code", { text: skipped.path })),
        el("td", { class: "error reason", text: skipped.reason }))))))
      : el("p", { class: "muted", text: "Every file of the plugin directory loaded." }));
}

// ---- routing, live updates, polling ----

let refreshCurrent = null;
let refreshTimer = null;
let refreshDue = Infinity;
let refreshing = false;
let refreshAgain = false;

// Reads the page's data again within `delay` ms. A refresh already due sooner stands
// (so a steady stream of events refreshes at that pace instead of never), and one
// asked for while another is in flight runs once it is done.
function scheduleRefresh(delay) {
  if (!refreshCurrent) return;
  const due = Date.now() + delay;
  if (refreshTimer !== null && due >= refreshDue) return;
  clearTimeout(refreshTimer);
  refreshDue = due;
  refreshTimer = setTimeout(runRefresh, delay);
}

async function runRefresh() {
  refreshTimer = null;
  refreshDue = Infinity;
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = true;
  try {
    await refreshCurrent();
  } catch (err) {
    if (err instanceof Unauthorized) return toLogin();
    notice(err.message, true);
  } finally {
    refreshing = false;
    if (refreshAgain) {
      refreshAgain = false;
      scheduleRefresh(250);
    }
  }
}

function toLogin() {
  location.assign("/dashboard/login");
}

function route() {
  const path = location.pathname.replace(/\/+$/, "") || "/dashboard";
  const job = path.match(/^\/dashboard\/jobs\/([^/]+)$/);
  if (job) return { nav: "jobs", render: (root) => jobView(root, decodeURIComponent(job[1])), jobId: decodeURIComponent(job[1]) };
  if (path === "/dashboard/jobs") return { nav: "jobs", render: jobsView };
  if (path === "/dashboard/schedules") return { nav: "schedules", render: schedulesView };
  if (path === "/dashboard/plugins") return { nav: "plugins", render: pluginsView };
  return { nav: "overview", render: overviewView };
}

async function startApp() {
  const root = document.getElementById("view");
  const current = route();
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("current", link.dataset.nav === current.nav);
  }
  document.getElementById("logout").addEventListener("click", async () => {
    await fetch("/dashboard/logout", { method: "POST", credentials: "same-origin" });
    toLogin();
  });
  try {
    const refresh = await current.render(root);
    refreshCurrent = refresh || (() => current.render(root));
  } catch (err) {
    if (err instanceof Unauthorized) return toLogin();
    root.replaceChildren(el("p", { class: "error", text: `Cannot read the daemon: ${err.message}` }));
    refreshCurrent = () => current.render(root);
  }
  document.body.dataset.ready = "true";
  follow(current);
  setInterval(() => scheduleRefresh(0), POLL_MS);
}

function follow(current) {
  const live = document.getElementById("live");
  const events = new EventSource("/dashboard/api/events");
  events.addEventListener("open", () => {
    live.textContent = "live";
    live.classList.add("on");
  });
  events.addEventListener("error", () => {
    live.textContent = "reconnecting…";
    live.classList.remove("on");
  });
  events.addEventListener("job", (message) => {
    const event = JSON.parse(message.data);
    if (current.jobId && event.id !== current.jobId) return;
    scheduleRefresh(current.jobId ? 100 : current.nav === "overview" ? 1000 : 300);
  });
  // New log lines or progress: only the page of that job reads again.
  events.addEventListener("output", (message) => {
    const event = JSON.parse(message.data);
    if (current.jobId && event.id === current.jobId) scheduleRefresh(250);
  });
  events.addEventListener("lagged", () => scheduleRefresh(0));
}

function startLogin() {
  const form = document.getElementById("login-form");
  const input = document.getElementById("token");
  const fromFragment = () => {
    const token = new URLSearchParams(location.hash.slice(1)).get("token");
    if (!token) return false;
    // Out of the address bar and the history before anything else happens.
    history.replaceState(null, "", location.pathname);
    input.value = token;
    form.submit();
    return true;
  };
  // A link opened in a tab already on this page changes only the fragment.
  window.addEventListener("hashchange", fromFragment);
  if (!fromFragment()) input.focus();
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.view === "login") startLogin();
  else startApp();
});
