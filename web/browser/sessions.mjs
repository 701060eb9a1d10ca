// The watch page in headless Chromium across encoder sessions: opens URL and samples the
// picture size every 250 ms until every size in SIZES (comma-separated, in order) has
// played or SECONDS pass. Prints one JSON line: the sizes played in order (each with its
// number of samples while playing), the page's errors. Exits 0 when all played in order.
// Usage: node browser/sessions.mjs URL SECONDS 320x180,480x270
import { LOOPBACK, run } from "./chromium.mjs";

const [url, seconds, want] = [process.argv[2], Number(process.argv[3] ?? 60), (process.argv[4] ?? "").split(",")];
await run(["--autoplay-policy=no-user-gesture-required", LOOPBACK], async (browser) => {
  const page = await browser.newPage({ viewport: { width: 960, height: 540 } });
  await page.goto(url);
  const sizes = [];
  const end = Date.now() + seconds * 1000;
  let last = -1;
  while (Date.now() < end) {
    const s = await page.evaluate(() => {
      const v = document.getElementById("v");
      return { size: `${v.videoWidth}x${v.videoHeight}`, t: v.currentTime };
    });
    // Counted only while the picture moves.
    if (s.t !== last && s.size !== "0x0") {
      if (sizes.length && sizes[sizes.length - 1][0] === s.size) sizes[sizes.length - 1][1] += 1;
      else sizes.push([s.size, 1]);
    }
    last = s.t;
    const seen = sizes.map((x) => x[0]);
    let at = 0;
    for (const size of seen) if (size === want[at]) at += 1;
    if (at === want.length && sizes[sizes.length - 1][1] >= 8) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  const errors = await page.evaluate(() => window.watch.errors);
  const seen = sizes.map((x) => x[0]);
  let at = 0;
  for (const size of seen) if (size === want[at]) at += 1;
  return { ok: at === want.length, sizes, errors };
});
