// The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core; no browser is downloaded). tests/e2e/dashboard.rs starts the daemon
// and runs this as
//   node tests/browser/dashboard.mjs URL
// with the token, the CLI, the data directory and the screenshot directory in the
// environment (HONEYDEW_TOKEN, HONEYDEW_CLI, HONEYDEW_DATA_DIR, HONEYDEW_SCREENSHOTS,
// and HONEYDEW_HOLD_URL / HONEYDEW_RELEASE_URL, the test's server that holds a job
// halfway). It checks that the pages refuse a browser without the token, log it in
// with the token, pause a plugin from its page, show a submitted job without a reload
// from pending until it completes, cancel a running job from its page, show a running
// job's log and progress live, and refuse an action without the CSRF header; it keeps
// a screenshot of each page. Its last line on stdout is one JSON object: {"ok": true,
// ...} with the ids of the jobs it submitted, or {"ok": false, "error": ...}.
// Every wait is on something the page shows, bounded by TIMEOUT_MS.

import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const TIMEOUT_MS = 30000;
const base = process.argv[2];
const token = process.env.HONEYDEW_TOKEN;
const cli = process.env.HONEYDEW_CLI;
const dataDir = process.env.HONEYDEW_DATA_DIR;
const shots = process.env.HONEYDEW_SCREENSHOTS;
if (!base || !token || !cli || !dataDir || !shots) {
  console.error("usage: HONEYDEW_TOKEN=.. HONEYDEW_CLI=.. HONEYDEW_DATA_DIR=.. HONEYDEW_SCREENSHOTS=.. node dashboard.mjs URL");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const checks = [];
function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
  checks.push(what);
}

function cliOut(args) {
  return execFileSync(cli, ["--data-dir", dataDir, ...args], { encoding: "utf8" });
}

function submit(command, payload) {
  return cliOut(["submit", command, "--payload", payload]).trim().split(/\s+/).pop();
}

async function shot(page, name) {
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

const userDataDir = mkdtempSync(join(tmpdir(), "honeydew-chromium-"));
const args = [
  "--headless",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
if (process.getuid && process.getuid() === 0) args.push("--no-sandbox");
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args,
  viewport: { width: 1280, height: 800 },
  timeout: TIMEOUT_MS,
});
context.setDefaultTimeout(TIMEOUT_MS);
const page = context.pages()[0] || (await context.newPage());
const pageErrors = [];
page.on("pageerror", (err) => pageErrors.push(String(err)));
page.on("console", (message) => {
  // The refusals this test provokes (401, 403) are logged as failed loads: not errors.
  if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
    pageErrors.push(message.text());
  }
});
const screenshots = [];
const result = { ok: false };

async function ready() {
  await page.waitForSelector("body[data-ready='true']");
}

try {
  // Without the token: the pages lead to the login, the API answers 401.
  await page.goto(`${base}/dashboard/jobs`);
  check(new URL(page.url()).pathname === "/dashboard/login", "a page without a session redirects to the login");
  check(await page.isVisible("#login-form"), "the login form is shown");
  const refused = await page.request.get(`${base}/dashboard/api/overview`);
  check(refused.status() === 401, "the API refuses without a session");
  await page.fill("#token", "0".repeat(64));
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  check((await page.textContent("#login-error")).includes("not the daemon's token"), "a wrong token is refused");
  check((await page.request.get(`${base}/dashboard/api/overview`)).status() === 401, "still no session after a wrong token");
  screenshots.push(await shot(page, "login"));

  // The token in the fragment logs in, and leaves the address bar.
  await page.goto(`${base}/dashboard/login#token=${token}`);
  await page.waitForURL(`${base}/dashboard/`);
  await ready();
  check(!page.url().includes(token), "the token is not left in the address");
  const cookies = await context.cookies(base);
  const session = cookies.find((cookie) => cookie.name === "honeydew_session");
  check(session && session.httpOnly && session.sameSite === "Strict", "the session cookie is HttpOnly and SameSite=Strict");
  check(!(await page.evaluate(() => document.cookie)).includes("honeydew_session"), "scripts cannot read the session");
  check(!(await page.content()).includes(token), "the page never shows the token");

  // Pause the echo plugin from its page, so that the job submitted next waits.
  await page.goto(`${base}/dashboard/plugins`);
  await ready();
  await page.click("tr[data-plugin='echo'] button[data-action='pause']");
  await page.waitForSelector("tr[data-plugin='echo'] button[data-action='resume']");
  check(cliOut(["pause"]).includes("echo"), "the plugin was paused from the page");

  // The jobs list shows a submitted job without a reload, and follows it from pending
  // (held by the pause) to completed once the plugin is resumed.
  await page.goto(`${base}/dashboard/jobs`);
  await ready();
  await page.waitForSelector("#live.on");
  await page.evaluate(() => { window.stillTheSamePage = true; });
  const echo = submit("echo.echo", JSON.stringify({ hello: "dashboard" }));
  await page.waitForSelector(`tr[data-job-id='${echo}'][data-status='pending']`);
  screenshots.push(await shot(page, "jobs-pending"));
  cliOut(["resume", "echo"]);
  await page.waitForSelector(`tr[data-job-id='${echo}'][data-status='completed']`);
  check(await page.evaluate(() => window.stillTheSamePage === true), "the job appeared, then completed, without a reload");
  screenshots.push(await shot(page, "jobs"));

  // Its page: payload, result, the attempt with its duration and fuel.
  await Promise.all([page.waitForNavigation(), page.click(`tr[data-job-id='${echo}'] a`)]);
  await ready();
  check((await page.textContent("#job-status")) === "completed", "the job's page says completed");
  const payloadText = await page.textContent(".two");
  check(payloadText.includes("dashboard"), "the job's page shows the payload and result");
  const attemptRow = await page.textContent("tr[data-attempt='1']");
  check(attemptRow.includes("completed") && /\d/.test(attemptRow), "the attempt is listed with its outcome, duration and fuel");
  screenshots.push(await shot(page, "job"));

  // Cancel from the page cancels a running job.
  const sleeper = submit("spin.sleep", JSON.stringify({ ms: 120000 }));
  await page.goto(`${base}/dashboard/jobs/${sleeper}`);
  await ready();
  await page.waitForSelector("#live.on");
  await page.waitForSelector("#job-status[data-status='running']");
  await page.evaluate(() => { window.stillTheSamePage = true; });
  screenshots.push(await shot(page, "job-running"));
  await page.click("#cancel");
  await page.waitForSelector("#job-status[data-status='cancelled']");
  check(await page.evaluate(() => window.stillTheSamePage === true), "the running job was cancelled from its page, seen live");
  await page.waitForSelector("#retry");
  check(await page.isVisible("#retry"), "a cancelled job offers a retry");

  // A running job's log lines and progress show on its page as the plugin writes
  // them: chatty logs 25 lines, reports 1 of 2 and waits on the test's server until
  // this script has seen them and lets it go; then the rest arrives live too.
  const talked = submit("chatty.talk", JSON.stringify({ lines: 25, hold_url: process.env.HONEYDEW_HOLD_URL }));
  await page.goto(`${base}/dashboard/jobs/${talked}`);
  await ready();
  await page.waitForSelector("#live.on");
  await page.waitForFunction(() => (document.querySelector("#job-progress")?.textContent || "").includes("halfway"));
  const halfway = await page.textContent("#job-progress");
  check(halfway.includes("1 of 2"), "a running job's progress shows on its page, live");
  await page.waitForFunction(() => (document.querySelector("[data-log-attempt='1'] pre")?.textContent || "").includes("line 25"));
  const logged = await page.textContent("[data-log-attempt='1'] pre");
  check(logged.includes("line 1\n") && logged.includes("warn  line 10"), "a running job's log lines show with their levels, live");
  screenshots.push(await shot(page, "job-log"));
  const released = await fetch(process.env.HONEYDEW_RELEASE_URL);
  check(released.ok, "the held job is let go");
  await page.waitForSelector("#job-status[data-status='completed']");
  await page.waitForFunction(() => (document.querySelector("#job-progress")?.textContent || "").includes("2 of 2"));
  const finished = await page.textContent("[data-log-attempt='1'] pre");
  check(finished.includes("finished after 25 lines"), "the log's last line arrives without a reload");

  // An action without the CSRF header is refused, even with the session.
  const forged = await page.evaluate(async () => {
    const response = await fetch("/dashboard/api/pauses/echo/pause", { method: "POST", credentials: "same-origin" });
    return response.status;
  });
  check(forged === 403, "an action without X-Honeydew-Csrf is refused");

  // Schedules, plugins and the overview.
  await page.goto(`${base}/dashboard/schedules`);
  await ready();
  const scheduleRow = await page.textContent("tr[data-schedule='nightly-echo']");
  check(scheduleRow.includes("0 3 * * *") && scheduleRow.includes("in "), "the schedule is listed with its next run");
  screenshots.push(await shot(page, "schedules"));

  await page.goto(`${base}/dashboard/plugins`);
  await ready();
  const echoRow = await page.textContent("tr[data-plugin='echo']");
  check(echoRow.includes("sha256") && echoRow.includes("fuel"), "a plugin is listed with its sha256 and limits");
  const broken = await page.textContent("tr[data-skipped='broken']");
  check(broken.length > 20, "a refused plugin file is listed with its reason");
  screenshots.push(await shot(page, "plugins"));

  await page.goto(`${base}/dashboard/`);
  await ready();
  check(Number(await page.textContent("[data-count='completed']")) >= 1, "the overview counts the completed job");
  check(Number(await page.textContent("[data-count='cancelled']")) >= 1, "the overview counts the cancelled job");
  check((await page.$$("[data-chart] rect")).length >= 1, "the throughput chart has a bar");
  screenshots.push(await shot(page, "overview"));

  // A phone.
  await page.setViewportSize({ width: 390, height: 844 });
  screenshots.push(await shot(page, "overview-phone"));
  await page.goto(`${base}/dashboard/jobs/${echo}`);
  await ready();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, "a job's page fits a phone's width");
  screenshots.push(await shot(page, "job-phone"));
  await page.setViewportSize({ width: 1280, height: 800 });

  // Logging out ends the session.
  await Promise.all([page.waitForURL(`${base}/dashboard/login`), page.click("#logout")]);
  check((await page.request.get(`${base}/dashboard/api/overview`)).status() === 401, "after logging out the API refuses again");

  check(pageErrors.length === 0, `no script errors (${pageErrors.join("; ")})`);
  Object.assign(result, { ok: true, echo, talked, cancelled: sleeper, checks, screenshots });
} catch (err) {
  try { screenshots.push(await shot(page, "failure")); } catch (_) { /* the page is gone */ }
  Object.assign(result, { ok: false, error: String(err && err.stack || err), url: page.url(), checks, pageErrors, screenshots });
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
