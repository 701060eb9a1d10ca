// Several watch pages in one headless Chromium, on loopback: each joins the swarm and
// plays. Prints one JSON line with, per page: startup (opening the page to playing),
// behind-live samples (every 500 ms, frame on screen vs ingest's clock), time stalled
// (media time standing still while playing) and the longest stall, bytes played by
// source (pages, seeders over WebRTC, HTTP), its peer's counters; and the browser's
// CPU seconds over the run.
//
// Usage: node browser/pages.mjs URL PAGES SECONDS [--late N] [--forgers N] [--leavers N] [--shots DIR] [--http-only | --p2pml]
//   --late N     the last N pages open halfway through (joining mid-stream)
//   --forgers N  the first N pages forge every piece they pass on (the payload marked
//                "FORGED!!"); every page counts marked pieces it hands its player
//   --leavers N  three quarters through, the N honest pages pushing to the most children
//                close (mid-push: the others must not stall); reported as they were then
//   --http-only  every page plays the seeder's HLS, no swarm (to compare)
//   --p2pml      every page plays the seeder's HLS with p2p-media-loader 2.x instead of
//                Shoal's peer, meeting the others on an npm `bittorrent-tracker` server
//                started here (browser/p2pml-entry.ts; no forgers: it checks nothing)
import { readdirSync, readFileSync } from "node:fs";
import { createServer } from "node:http";

import { LOOPBACK, run } from "./chromium.mjs";

const [url, pages, seconds] = [process.argv[2], Number(process.argv[3] ?? 4), Number(process.argv[4] ?? 20)];
const opt = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i < 0 ? dflt : process.argv[i + 1];
};
const late = Number(opt("--late", 0));
const forgers = Number(opt("--forgers", 0));
const leavers = Number(opt("--leavers", 0));
const shots = opt("--shots", null);
const p2pml = process.argv.includes("--p2pml") ? await p2pmlSite(url) : null;
const target = p2pml?.url ?? (process.argv.includes("--http-only") ? `${url}?p2p=0` : url);

/**
 * For --p2pml: a WebTorrent tracker and a page with hls.js + p2p-media-loader playing the
 * HLS the watch page at `watchUrl` plays, both on loopback ports chosen here.
 */
async function p2pmlSite(watchUrl) {
  const page = await (await fetch(watchUrl)).text();
  // The seeder's plain playlist (the same segments, no LL-HLS): p2p-media-loader shares
  // whole segments, and with LL-HLS's blocking reloads it loses track of the playlist.
  const live = new URL(page.match(/data-src="([^"]+)"/)?.[1] ?? "", watchUrl).href;
  const src = live.replace(/live\.m3u8$/, "plain.m3u8");
  const { default: Server } = await import("bittorrent-tracker/server");
  const tracker = new Server({ udp: false, http: false, ws: true, stats: false });
  await new Promise((ok) => tracker.listen(0, "127.0.0.1", ok));
  const announce = `ws://127.0.0.1:${tracker.ws.address().port}`;
  const bundle = readFileSync(new URL("../dist/browser/p2pml-entry.js", import.meta.url));
  const html = `<!doctype html><meta charset="utf-8"><title>p2p-media-loader</title>
<body data-src="${src}" data-tracker="${announce}"><video id="v" muted autoplay playsinline></video>
<script src="/p2pml.js"></script></body>`;
  const site = createServer((req, res) => {
    const js = req.url === "/p2pml.js";
    res.writeHead(200, { "content-type": js ? "text/javascript" : "text/html" });
    res.end(js ? bundle : html);
  });
  await new Promise((ok) => site.listen(0, "127.0.0.1", ok));
  return {
    url: `http://127.0.0.1:${site.address().port}/`,
    close: () => {
      site.close();
      tracker.close();
    },
  };
}

/** CPU seconds used by every Chromium process so far (user + system). */
function chromiumCpuSeconds() {
  let ticks = 0;
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      if (!/chrom/i.test(comm)) continue;
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // the process ended meanwhile
    }
  }
  return ticks / 100;
}

/** Runs in each page: a probe of playback, and the forger's or the honest page's hooks. */
function instrument(forge) {
  const v = document.getElementById("v");
  // `stalls`: [start, ms] of each stall of 300 ms or more, on the page's clock (its log's).
  const probe = { stalledMs: 0, longestStallMs: 0, stalls: [], behind: [], startedAt: null, last: -1, since: 0, forgedSent: 0, forgedPlayed: 0 };
  window.probe = probe;
  setInterval(() => {
    const now = performance.now();
    if (!window.watch.started) return;
    if (probe.startedAt === null) {
      probe.startedAt = now;
      probe.since = now;
    }
    if (v.currentTime !== probe.last || v.paused) {
      if (now - probe.since >= 400 && probe.stalls.length < 100) probe.stalls.push([Math.round(probe.since), Math.round(now - probe.since - 100)]);
      probe.last = v.currentTime;
      probe.since = now;
    } else {
      probe.stalledMs += 100;
      probe.longestStallMs = Math.max(probe.longestStallMs, now - probe.since);
    }
  }, 100);
  setInterval(() => {
    if (window.watch.behindMs !== null) probe.behind.push(window.watch.behindMs);
  }, 500);
  const marker = new TextEncoder().encode("FORGED!!");
  const marked = (payload) => marker.every((b, i) => payload[4 + i] === b);
  const hook = () => {
    if (window.watch.kind === "p2pml") return;
    const peer = window.watch.peer;
    if (!peer) return setTimeout(hook, 50);
    // Every page: a marked piece reaching its player would be a forgery played.
    const piece = peer.piece.bind(peer);
    peer.piece = (seq) => {
      const p = piece(seq);
      if (p && marked(p.payload)) probe.forgedPlayed += 1;
      return p;
    };
    if (!forge) return;
    // A forger: every piece it sends (pushes, answers) altered after signing, and
    // every piece it gets pushed, altered, to every neighbour unasked.
    const forged = (piece) => {
      const wire = piece.wire.slice();
      wire.set(marker, 56 + 4);
      probe.forgedSent += 1;
      return { kind: "piece", piece: { ...piece, wire, payload: wire.subarray(56, 56 + piece.payload.length) } };
    };
    const send = peer.send.bind(peer);
    peer.send = (link, msg) => send(link, msg.kind === "piece" ? forged(msg.piece) : msg);
    const keep = peer.keep.bind(peer);
    peer.keep = (piece) => {
      keep(piece);
      for (const link of peer.links.values()) if (link.hello) peer.send(link, { kind: "piece", piece });
    };
  };
  hook();
}

const flags = ["--autoplay-policy=no-user-gesture-required", LOOPBACK];
await run(flags, async (browser) => {
  const cpu0 = chromiumCpuSeconds();
  const opened = [];
  const open = async (i) => {
    const context = await browser.newContext({ viewport: { width: 320, height: 180 } });
    const page = await context.newPage();
    const t0 = performance.now();
    await page.goto(target);
    await page.evaluate(instrument, i < forgers);
    opened[i] = { page, t0, late: i >= pages - late, forger: i < forgers };
  };
  /** When the (last) leaver closed, ms since the epoch. */
  let leaveWall = null;
  /** What page `i` saw so far. */
  const collect = async (i) => {
    const o = opened[i];
    const r = await o.page.evaluate(() => ({
      started: window.watch.started,
      startedAt: window.watch.marks?.playing ?? window.probe.startedAt,
      marks: window.watch.marks,
      stalledMs: window.probe.stalledMs,
      longestStallMs: Math.round(window.probe.longestStallMs),
      stalls: window.probe.stalls,
      behind: window.probe.behind,
      bytes: window.watch.bytes,
      neighbours: window.watch.neighbours,
      forgedSent: window.probe.forgedSent,
      forgedPlayed: window.probe.forgedPlayed,
      skips: window.watch.skips,
      watchedS: window.watch.watchedS,
      hlsjs: { latency: window.hls?.latency, target: window.hls?.targetLatency },
      errors: window.watch.errors,
      log: window.watch.log,
      peer: window.watch.peer?.stats ?? null,
      tree: window.watch.peer?.tree() ?? null,
      now: performance.now(),
      timeOrigin: performance.timeOrigin,
    }));
    // Startup: from opening the page (Node's clock) to the first playing sample (the page's).
    const startupMs = r.startedAt === null ? null : Math.round(r.timeOrigin + r.startedAt - (performance.timeOrigin + o.t0));
    const playedWallMs = r.startedAt === null ? 0 : Math.round(r.now - r.startedAt);
    if (shots) await o.page.screenshot({ path: `${shots}/page-${i}.png` });
    // The swarm's events explain a stall; a page that played on keeps its output short
    // (SHOAL_PAGES_LOG=1 keeps every page's, to dig into a share or a tree).
    // (`leftAt`: when a leaver closed, on this page's clock, as the log's times are;
    // `timeOrigin`: that clock's zero in ms since the epoch, to put pages' logs and
    // stalls on one timeline.)
    const log = r.longestStallMs > 1000 || process.env.SHOAL_PAGES_LOG ? r.log : undefined;
    const leftAt = log && leaveWall !== null ? Math.round(leaveWall - r.timeOrigin) : undefined;
    return { i, late: o.late, forger: o.forger, startupMs, playedWallMs, ...r, log, leftAt, startedAt: undefined, now: undefined };
  };
  /** Substreams page `i` pushes to other pages now (children, summed over its links). */
  const children = (i) =>
    opened[i].page.evaluate(() => {
      const peer = window.watch.peer;
      if (!peer) return 0;
      let n = 0;
      for (const l of peer.links.values()) for (let b = l.children; b > 0n; b >>= 1n) n += Number(b & 1n);
      return n;
    });
  const wait = (ms) => new Promise((r) => setTimeout(r, ms));
  const early = pages - late;
  for (let i = 0; i < early; i++) await open(i);
  await wait((seconds * 1000) / 2);
  for (let i = early; i < pages; i++) await open(i);
  await wait((seconds * 1000) / 4);
  const left = new Map();
  if (leavers > 0) {
    const honest = [];
    for (const [i, o] of opened.entries()) if (!o.forger && !o.late) honest.push({ i, children: await children(i) });
    honest.sort((a, b) => b.children - a.children);
    for (const { i, children: n } of honest.slice(0, leavers)) {
      left.set(i, { ...(await collect(i)), left: true, childrenAtLeave: n });
      leaveWall = performance.timeOrigin + performance.now();
      await opened[i].page.context().close();
    }
  }
  await wait((seconds * 1000) / 4);
  const results = [];
  for (const i of opened.keys()) results.push(left.get(i) ?? (await collect(i)));
  const cpuSeconds = chromiumCpuSeconds() - cpu0;
  p2pml?.close();
  return { ok: results.every((r) => r.started), pages: results, cpuSeconds, seconds };
});
