// A broadcaster's own site with its own hls.js player, in headless Chromium: a blank
// page (another origin than the seeder's) loads hls.js from the site's copy
// (node_modules here) and the seeder's /watch/shoal-hls.js, then does what the watch
// page's embed snippet says; it plays SECONDS of media and prints one JSON line: how
// much played, the longest stall, where the bytes came from, errors. Exits 0 when it
// played.
// Usage: node browser/embed.mjs WATCH_URL SECONDS
import { LOOPBACK, run } from "./chromium.mjs";

const [watch, seconds] = [process.argv[2], Number(process.argv[3] ?? 5)];
const hlsjs = new URL("../node_modules/hls.js/dist/hls.min.js", import.meta.url).pathname;
await run(["--autoplay-policy=no-user-gesture-required", LOOPBACK], async (browser) => {
  const page = await browser.newPage();
  await page.goto("about:blank");
  await page.addScriptTag({ path: hlsjs });
  await page.addScriptTag({ url: new URL("/watch/shoal-hls.js", watch).href });
  await page.evaluate(async (watch) => {
    const video = document.createElement("video");
    video.muted = true;
    document.body.append(video);
    const { src, config, state } = await window.Shoal.hls(window.Hls, video, watch);
    const hls = new window.Hls(config);
    const errors = [];
    hls.on(window.Hls.Events.ERROR, (_e, d) => {
      errors.push(`${d.type}:${d.details}${d.fatal ? ":fatal" : ""}`);
      if (d.fatal && d.details === window.Hls.ErrorDetails.MANIFEST_LOAD_ERROR) setTimeout(() => hls.loadSource(src), 1_000);
      else if (d.fatal) hls.startLoad();
    });
    hls.loadSource(src);
    hls.attachMedia(video);
    video.play().catch(() => {});
    window.site = { video, state, errors, src, longestStallMs: 0, last: -1, since: performance.now() };
    setInterval(() => {
      const s = window.site;
      const now = performance.now();
      if (video.currentTime !== s.last || video.paused) {
        s.last = video.currentTime;
        s.since = now;
      } else if (video.currentTime > 0) {
        s.longestStallMs = Math.max(s.longestStallMs, now - s.since);
      }
    }, 100);
  }, watch);
  await page.waitForFunction((s) => window.site.video.currentTime >= s, seconds, { timeout: (seconds + 30) * 1000 });
  const r = await page.evaluate(() => {
    const s = window.site;
    return {
      played: s.video.currentTime,
      src: s.src,
      longestStallMs: Math.round(s.longestStallMs),
      bytes: s.state.bytes,
      neighbours: s.state.neighbours,
      errors: [...s.errors, ...s.state.errors],
      peer: s.state.peer?.stats ?? null,
    };
  });
  return { ok: true, ...r };
});
