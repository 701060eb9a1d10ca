// The WebTorrent ecosystem's tracker client against Shoal's tracker: two pages in
// headless Chromium run the npm `bittorrent-tracker` client on a channel's info-hash;
// the tracker relays their WebRTC offers and answers (PROTOCOL.md §6.1), a data channel
// opens and each reads the other's greeting. A third announces an info-hash no channel
// has and is told why. Usage: node browser/bt-clients.mjs ws://HOST:PORT/announce CHANNEL_HEX
// Prints one JSON line; exits 0 when both pages read the other's greeting and the third
// got the tracker's reason.
import { LOOPBACK, blankPageWith, run } from "./chromium.mjs";

const [url, channel] = process.argv.slice(2);
await run([LOOPBACK], async (browser) => {
  const page = () => blankPageWith(browser, "bt-entry");
  const [a, b, c] = [await page(), await page(), await page()];
  await b.evaluate(([u, ch]) => window.bt.start(u, ch, "B"), [url, channel]);
  // B is in the channel (the tracker answered its announce) before A's offers go out.
  await b.waitForFunction(() => window.bt.seen.updates.length > 0 || window.bt.seen.warnings.length > 0, null, { timeout: 10_000 });
  await a.evaluate(([u, ch]) => window.bt.start(u, ch, "A"), [url, channel]);
  const greeted = (p) => p.waitForFunction(() => window.bt.seen.got.length > 0 || window.bt.seen.errors.length > 0, null, { timeout: 20_000 });
  await Promise.all([greeted(a), greeted(b)]);
  await c.evaluate((u) => window.bt.start(u, "ab".repeat(20), "C", true), url);
  await c.waitForFunction(() => window.bt.seen.warnings.length > 0 || window.bt.seen.updates.length > 0, null, { timeout: 10_000 });
  const [sa, sb, sc] = [await a.evaluate(() => window.bt.seen), await b.evaluate(() => window.bt.seen), await c.evaluate(() => window.bt.seen)];
  const ok = sa.got.includes("hello from B") && sb.got.includes("hello from A") && sc.warnings.some((w) => w.startsWith("unknown channel"));
  return { ok, a: sa, b: sb, c: sc };
});
