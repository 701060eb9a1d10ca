// Debian's Chromium, headless, for the browser tests: runs `body(browser)`, prints its
// result as one JSON line and exits 0 if `result.ok` (a throw is a failed result).
import { readFileSync } from "node:fs";

import { chromium } from "playwright-core";

export async function run(args, body) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", ...args],
  });
  let result;
  try {
    result = await body(browser);
  } catch (e) {
    result = { ok: false, error: String(e) };
  } finally {
    await browser.close();
  }
  // Written, then exit: `console.log` to a pipe is asynchronous, and exiting at once cut
  // a long result at 64 KiB (a run with pages' logs in it could not be parsed).
  await new Promise((resolve) => process.stdout.write(`${JSON.stringify(result)}\n`, resolve));
  process.exit(result.ok ? 0 : 1);
}

// Loopback candidates as they are (not hidden behind mDNS names no resolver here knows);
// an about:blank page may open a WebSocket to loopback (the watch page is served from a
// seeder, itself a local address, which needs no such flag).
export const LOOPBACK = "--disable-features=WebRtcHideLocalIpsWithMdns,LocalNetworkAccessChecks";

/** Opens a blank page running the bundle dist/browser/`name`.js (from browser/`name`.ts). */
export async function blankPageWith(browser, name) {
  const bundle = readFileSync(new URL(`../dist/browser/${name}.js`, import.meta.url), "utf8");
  const p = await browser.newPage();
  await p.goto("about:blank");
  await p.addScriptTag({ content: bundle });
  return p;
}
