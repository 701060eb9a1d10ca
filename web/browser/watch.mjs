// The watch page in headless Chromium: opens URL, waits until the video has played
// SECONDS of media, takes a screenshot to SCREENSHOT, and prints one JSON line: how much
// played, the longest stall (media time not advancing while not paused), how far
// behind live, hls.js errors. Exits 0 when it played.
// Usage: node browser/watch.mjs URL SECONDS SCREENSHOT
import { chromium } from "playwright-core";

const [url, seconds, shot] = [process.argv[2], Number(process.argv[3] ?? 5), process.argv[4]];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
});
let result = { ok: false };
try {
  const page = await browser.newPage({ viewport: { width: 960, height: 540 } });
  await page.goto(url);
  // Samples media time every 100 ms in the page: the longest it stood still.
  await page.evaluate(() => {
    const v = document.getElementById("v");
    window.probe = { longestStallMs: 0, last: -1, since: performance.now() };
    setInterval(() => {
      const now = performance.now();
      if (v.currentTime !== window.probe.last || v.paused || !window.watch.started) {
        window.probe.last = v.currentTime;
        window.probe.since = now;
      } else {
        window.probe.longestStallMs = Math.max(window.probe.longestStallMs, now - window.probe.since);
      }
    }, 100);
  });
  const started = performance.now();
  await page.waitForFunction(() => window.watch.started, null, { timeout: 30_000 });
  const startupMs = Math.round(performance.now() - started);
  const t0 = await page.evaluate(() => document.getElementById("v").currentTime);
  await page.waitForFunction((t) => document.getElementById("v").currentTime >= t, t0 + seconds, { timeout: (seconds + 20) * 1000 });
  if (shot) await page.screenshot({ path: shot });
  const s = await page.evaluate(() => ({
    played: document.getElementById("v").currentTime,
    behindMs: window.watch.behindMs,
    errors: window.watch.errors,
    longestStallMs: Math.round(window.probe.longestStallMs),
    overlay: document.getElementById("stats").textContent,
  }));
  result = { ok: true, startupMs, ...s };
} catch (e) {
  result = { ok: false, error: String(e) };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
