// LL-HLS in a real player: hls.js (lowLatencyMode) in headless Chromium plays a seeder's
// playlist; every 0.5 s it records how far behind ingest's clock the frame on screen is
// (Date.now() - hls.playingDate, from #EXT-X-PROGRAM-DATE-TIME) and hls.js's own latency
// estimate to the live edge. Usage: node measure.js PLAYLIST_URL SECONDS [plain]
// (`plain`: lowLatencyMode off, for comparison: segments only).
const { chromium } = require('playwright-core');
(async () => {
  const [url, secs, plain] = [process.argv[2], Number(process.argv[3] || 30), process.argv[4] === 'plain'];
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--autoplay-policy=no-user-gesture-required', '--no-sandbox'] });
  const page = await browser.newPage();
  await page.goto('file://' + __dirname + '/page.html?src=' + encodeURIComponent(url) + (plain ? '&ll=0' : ''));
  await page.waitForTimeout(secs * 1000);
  const { samples, errors } = await page.evaluate(() => ({ samples: window.samples, errors: window.errors }));
  const q = await page.evaluate(() => { const v = document.getElementById('v'); const p = v.getVideoPlaybackQuality(); return { dropped: p.droppedVideoFrames, total: p.totalVideoFrames }; });
  await browser.close();
  const settled = samples.slice(Math.floor(samples.length / 3)); // after start-up
  const b = settled.map(s => s.behind_ms).sort((a, b) => a - b);
  const pct = p => b[Math.min(b.length - 1, Math.floor(p * (b.length - 1)))];
  // The picture sizes played, in order, with how many samples each (a stream whose
  // encoders change: each new session's size once it plays).
  const sizes = [];
  for (const s of samples) {
    if (sizes.length && sizes[sizes.length - 1][0] === s.size) sizes[sizes.length - 1][1] += 1;
    else sizes.push([s.size, 1]);
  }
  console.log(JSON.stringify({ samples: samples.length, behind_ms: { p50: pct(0.5), p95: pct(0.95), max: b[b.length - 1] }, last: settled[settled.length - 1], frames: q, sizes, errors }));
})();
