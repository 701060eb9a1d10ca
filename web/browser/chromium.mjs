// Debian's Chromium, headless, for the browser tests: runs `body(browser)`, prints its
// result as one JSON line and exits 0 if `result.ok` (a throw is a failed result).
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
  console.log(JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
}
