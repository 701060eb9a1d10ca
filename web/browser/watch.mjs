// The watch page in headless Chromium: opens URL, waits until the video has played
// SECONDS of media, takes a screenshot to SCREENSHOT, and prints one JSON line: time
// from opening the page to playing, how much played, the longest stall (media time not
// advancing while playing), how far behind live, hls.js errors. Exits 0 when it played.
// Usage: node browser/watch.mjs URL SECONDS SCREENSHOT
import { LOOPBACK, run } from "./chromium.mjs";

const [url, seconds, shot] = [process.argv[2], Number(process.argv[3] ?? 5), process.argv[4]];
// Host candidates as addresses, not mDNS names, and no local-network prompt: pages and
// the seeder meet on loopback.
const flags = ["--autoplay-policy=no-user-gesture-required", LOOPBACK];
await run(flags, async (browser) => {
  const page = await browser.newPage({ viewport: { width: 960, height: 540 } });
  const opened = performance.now();
  await page.goto(url);
  await page.waitForFunction(() => window.watch.started, null, { timeout: 30_000 });
  const startupMs = Math.round(performance.now() - opened);
  // From here, media time sampled every 100 ms: the longest it stood still.
  await page.evaluate(() => {
    const v = document.getElementById("v");
    window.probe = { longestStallMs: 0, last: -1, since: performance.now() };
    setInterval(() => {
      const now = performance.now();
      if (v.currentTime !== window.probe.last || v.paused) {
        window.probe.last = v.currentTime;
        window.probe.since = now;
      } else {
        window.probe.longestStallMs = Math.max(window.probe.longestStallMs, now - window.probe.since);
      }
    }, 100);
  });
  const t0 = await page.evaluate(() => document.getElementById("v").currentTime);
  await page.waitForFunction((t) => document.getElementById("v").currentTime >= t, t0 + seconds, { timeout: (seconds + 20) * 1000 });
  if (shot) await page.screenshot({ path: shot });
  const s = await page.evaluate(() => ({
    played: document.getElementById("v").currentTime - 0,
    behindMs: window.watch.behindMs,
    errors: window.watch.errors,
    longestStallMs: Math.round(window.probe.longestStallMs),
    overlay: document.getElementById("stats").textContent,
    bytes: window.watch.bytes,
    neighbours: window.watch.neighbours,
    forgedRefused: window.watch.forgedRefused,
    peer: window.watch.peer?.stats ?? null,
    log: window.watch.log.filter((l) => !l.includes(" http ")),
  }));
  return { ok: true, startupMs, ...s, played: s.played - t0 };
});
