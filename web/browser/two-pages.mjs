// Two pages in headless Chromium find each other through the tracker's WebSocket
// (PROTOCOL.md §6.1), open a WebRTC data channel and exchange Shoal `Hello` frames.
// Usage: node browser/two-pages.mjs ws://HOST:PORT/announce CHANNEL_HEX
// Prints one JSON line; exits 0 when both pages got the other's Hello.
import { LOOPBACK, blankPageWith, run } from "./chromium.mjs";

const [url, channel] = process.argv.slice(2);
await run([LOOPBACK], async (browser) => {
  const page = () => blankPageWith(browser, "pages-entry");
  const [a, b] = [await page(), await page()];
  await b.evaluate(([u, c]) => window.shoal.start(u, c, 2, 0), [url, channel]);
  // B has announced (the tracker answered it) before A's offer goes out.
  await b.waitForFunction(() => window.shoal.seen.announced > 0 || window.shoal.seen.errors.length > 0, null, { timeout: 10_000 });
  await a.evaluate(([u, c]) => window.shoal.start(u, c, 1, 1), [url, channel]);
  const both = (p) => p.waitForFunction(() => window.shoal.seen.hellos.length > 0 || window.shoal.seen.errors.length > 0, null, { timeout: 20_000 });
  await Promise.all([both(a), both(b)]);
  const [sa, sb] = [await a.evaluate(() => window.shoal.seen), await b.evaluate(() => window.shoal.seen)];
  return { ok: sa.hellos.includes("2") && sb.hellos.includes("1"), a: sa, b: sb };
});
