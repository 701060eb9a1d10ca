// The watch page's player (served by a seeder at /watch/{channel}). hls.js plays the
// channel's LL-HLS; when the page is told the channel and the tracker (<body
// data-channel-id data-tracker>), it also joins the swarm as a peer (web/src/peer.ts):
// it gets pushed pieces over WebRTC data channels from seeders and other pages,
// verifies each, passes on its share, and hls.js takes parts and segments from those
// pieces, fetching over HTTP only what the swarm did not bring in time. Safari without
// MSE plays the HLS natively. The overlay shows how far behind live it plays, its
// neighbours, and where its bytes came from.

import Hls from "hls.js/light";

import { PieceMap, swarmLoaders } from "../src/loader.js";
import { HourMeter } from "../src/metering.js";
import { PagePeer, peerIdOf } from "../src/peer.js";
import { Flags, infoHash } from "../src/piece.js";
import { TrackerClient } from "../src/tracker.js";

/** What the page exposes to its tests and to a curious viewer's console. */
interface WatchState {
  behindMs: number | null;
  errors: string[];
  started: boolean;
  /** Bytes played, by where they came from. */
  bytes: { peers: number; seeds: number; http: number };
  neighbours: number;
  forgedRefused: number;
  /** Times it skipped ahead to its target latency. */
  skips: number;
  /** Seconds watched this UTC hour (and, early in it, the last), as told to the tracker. */
  watchedS: number;
  peer: PagePeer | null;
  /**
   * When (performance.now(), ms since the page was opened) startup's steps first
   * happened: the playlist loaded, the first media (part or segment) loaded and
   * buffered, and the video played.
   */
  marks: { playlist?: number; media?: number; buffered?: number; playing?: number };
  /**
   * The swarm's last events (parents chosen and dropped, links closed, parts fetched
   * over HTTP), each after its performance.now() ms: what a stall is explained by.
   */
  log: string[];
}

declare global {
  interface Window {
    watch: WatchState;
  }
}

const video = document.getElementById("v") as HTMLVideoElement;
const overlay = document.getElementById("stats") as HTMLElement;
const unmute = document.getElementById("unmute") as HTMLButtonElement;
const data = document.body.dataset;
const src = data.src ?? "";
const state: WatchState = {
  behindMs: null,
  errors: [],
  started: false,
  bytes: { peers: 0, seeds: 0, http: 0 },
  neighbours: 0,
  forgedRefused: 0,
  skips: 0,
  watchedS: 0,
  peer: null,
  marks: {},
  log: [],
};
window.watch = state;
/** Events kept in {@link WatchState.log}. */
const LOG_KEPT = 5000;
const log = (what: string) => {
  state.log.push(`${Math.round(performance.now())} ${what}`);
  if (state.log.length > LOG_KEPT) state.log.splice(0, state.log.length - LOG_KEPT);
};
const mark = (step: keyof WatchState["marks"]) => {
  state.marks[step] ??= Math.round(performance.now());
};

unmute.addEventListener("click", () => {
  video.muted = !video.muted;
  unmute.textContent = video.muted ? "Unmute" : "Mute";
});
video.addEventListener("playing", () => {
  state.started = true;
  mark("playing");
});

const hex = (s: string) => Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));

/** What this page watched in each UTC hour, for metering. */
const metering = new HourMeter();

/** How far behind the playlist's newest part the page plays, s. */
const TARGET_LATENCY_S = 1.2;

/** Neighbours a page keeps looking for. */
const WANTED_NEIGHBOURS = 8;

/** The STUN and TURN servers the seeder names (`--ice-server`), as JSON; none if unreadable. */
function iceServersOf(json: string | undefined): RTCIceServer[] {
  try {
    const list: unknown = JSON.parse(json ?? "[]");
    return Array.isArray(list) ? (list as RTCIceServer[]) : [];
  } catch {
    state.errors.push("the page's ICE servers are not JSON: none used");
    return [];
  }
}

/** Joins the swarm; returns the loaders hls.js should use. */
function joinSwarm(channelHex: string, trackerUrl: string, substreams: number, iceServers: RTCIceServer[]) {
  const channel = hex(channelHex);
  const trackerId = crypto.getRandomValues(new Uint8Array(20));
  const fromSeed = new Map<bigint, boolean>();
  const listeners = new Set<() => void>();
  const channels = new Map<string, RTCDataChannel>();
  const peer = new PagePeer({
    channel,
    peerId: peerIdOf(trackerId),
    nSubstreams: substreams,
    uploadKbps: 4_000,
    log,
    onPiece: (p, seed) => {
      fromSeed.set(p.seq, seed);
      if (fromSeed.size > 4_096) fromSeed.delete(fromSeed.keys().next().value as bigint);
      for (const l of listeners) l();
    },
    onClose: (link) => {
      channels.get(link)?.close();
      channels.delete(link);
    },
  });
  state.peer = peer;
  log(`peer ${peerIdOf(trackerId)}`);
  // A closing tab tells its neighbours (a vanished one is found out only by silence).
  addEventListener("pagehide", () => peer.leave());
  let links = 0;
  /** The Shoal peer id a page's tracker identity (a WebTorrent binary string) stands for. */
  const shoalIdOf = (remote: string) => peerIdOf(Uint8Array.from(remote, (c) => c.charCodeAt(0)));
  const tracker = new TrackerClient({
    url: trackerUrl,
    infoHash: infoHash(channel),
    peerId: trackerId,
    iceServers,
    onError: (why) => state.errors.push(`tracker: ${why}`),
    admits: (remote) => peer.admits(shoalIdOf(remote)),
    onChannel: (dc, remote) => {
      const id = `${links++}`;
      log(`link ${id} is peer ${shoalIdOf(remote)}`);
      channels.set(id, dc);
      dc.binaryType = "arraybuffer";
      peer.attach({ id, expectedPeerId: shoalIdOf(remote) }, dc, Date.now());
      dc.addEventListener("message", (e) => peer.receive(id, new Uint8Array(e.data as ArrayBuffer), Date.now()));
      dc.addEventListener("close", () => {
        log(`link ${id} closed`);
        channels.delete(id);
        peer.detach(id);
      });
    },
  });
  let announcedAt = 0;
  let seedAsked = false;
  // Watched seconds in the current UTC hour, told to the tracker at once (the
  // tracker's baseline for this page) and then every 15 s.
  let reportedAt = 0;
  setInterval(() => {
    const now = Date.now();
    metering.tick(now, video.paused, video.currentTime);
    const counts = metering.counts(now);
    // Seconds of this hour and, early in an hour, of the one before: a page watching
    // across the hour's turn has watched both.
    state.watchedS = counts.watched + (counts.prev?.[0] ?? 0);
    if (now - reportedAt >= 15_000) {
      reportedAt = now;
      const st = peer.stats;
      const bytes = { uploaded: st.bytesSent, downloaded: st.bytesFromPeers + st.bytesFromSeeds + state.bytes.http };
      tracker.report(counts.watched, counts.ad, counts.prev, bytes).catch(() => {});
    }
  }, 1_000);
  setInterval(() => {
    const now = Date.now();
    peer.tick(now);
    state.neighbours = peer.neighbours;
    state.forgedRefused = peer.stats.forgedRefused;
    // More neighbours when short (a seed first), within the tracker's offer budget.
    if (peer.neighbours < WANTED_NEIGHBOURS && now - announcedAt > 5_000) {
      announcedAt = now;
      const wantSeed = !seedAsked || peer.parents().some((p) => p === null);
      seedAsked = true;
      tracker.announce(4, wantSeed).catch((e) => state.errors.push(`announce: ${e}`));
    }
  }, 100);
  const map = new PieceMap();
  const swarm = {
    piece: (seq: bigint) => peer.piece(seq),
    newest: () => peer.newestSeq,
    first: () => peer.firstSeq,
    onPiece: (fn: () => void) => {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
  };
  const report = {
    swarm: (seqs: bigint[], bytes: number) => {
      for (const seq of seqs) {
        const flags = peer.piece(seq)?.flags ?? 0;
        if (flags & Flags.AD_BREAK_START) metering.inAd = true;
        if (flags & Flags.AD_BREAK_END) metering.inAd = false;
      }
      const seeds = seqs.filter((s) => fromSeed.get(s)).length;
      state.bytes.seeds += (bytes * seeds) / seqs.length;
      state.bytes.peers += (bytes * (seqs.length - seeds)) / seqs.length;
    },
    http: (bytes: number, url: string) => {
      log(`http ${url.slice(url.lastIndexOf("/") + 1)}`);
      state.bytes.http += bytes;
    },
  };
  return swarmLoaders(Hls.DefaultConfig.loader as never, map, swarm, report);
}

let playingDate: () => Date | null = () => null;
if (Hls.isSupported()) {
  const substreams = Number(data.substreams);
  // `?p2p=0` plays the seeder's HLS only (for comparison, or a network that blocks WebRTC).
  const allowed = new URLSearchParams(location.search).get("p2p") !== "0";
  const p2p =
    allowed && data.channelId && data.tracker && typeof RTCPeerConnection === "function" && substreams > 0
      ? joinSwarm(data.channelId, data.tracker, substreams, iceServersOf(data.iceServers))
      : null;
  // Playing 1.2 s behind the playlist's edge leaves room for a late part (from a peer
  // that left, or HTTP after the swarm) without a stall; a stall adds 0.1 s to it
  // (hls.js's default, 1 s, would hold a page seconds behind after one hiccup).
  const hls = new Hls({
    lowLatencyMode: true,
    liveSyncDuration: TARGET_LATENCY_S,
    maxLiveSyncPlaybackRate: 1.5,
    liveSyncOnStallIncrease: 0.1,
    ...(p2p ?? {}),
  });
  hls.on(Hls.Events.ERROR, (_e, d) => {
    state.errors.push(`${d.type}:${d.details}${d.fatal ? ":fatal" : ""}`);
    // Opened before the stream (no playlist yet): ask again until it comes.
    if (d.fatal && d.details === Hls.ErrorDetails.MANIFEST_LOAD_ERROR) setTimeout(() => hls.loadSource(src), 1_000);
    else if (d.fatal && d.type === Hls.ErrorTypes.NETWORK_ERROR) hls.startLoad();
    else if (d.fatal && d.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
  });
  hls.once(Hls.Events.LEVEL_LOADED, () => mark("playlist"));
  hls.once(Hls.Events.FRAG_LOADED, () => mark("media"));
  hls.once(Hls.Events.FRAG_BUFFERED, () => mark("buffered"));
  hls.loadSource(src);
  hls.attachMedia(video);
  playingDate = () => hls.playingDate;
  (window as unknown as { hls: Hls }).hls = hls;
  // hls.js speeds up to reach its target latency only with over a second buffered
  // ahead, which a page a second behind live never has: a page that started late (a
  // slow first part, a busy machine) would stay late. Once a second, if it plays more
  // than 0.4 s behind the target and the target position is already buffered, it
  // skips there (within the buffer: no stall, a few frames dropped once).
  setInterval(() => {
    const target = hls.liveSyncPosition;
    const goal = hls.targetLatency;
    if (target === null || goal === null || video.paused || hls.latency - goal <= 0.4) return;
    const b = video.buffered;
    for (let i = 0; i < b.length; i++) {
      if (b.start(i) <= target && target < b.end(i) - 0.1) {
        video.currentTime = target;
        state.skips += 1;
        return;
      }
    }
  }, 1_000);
} else if (video.canPlayType("application/vnd.apple.mpegurl")) {
  video.src = src;
  playingDate = () => {
    const d = (video as HTMLVideoElement & { getStartDate?: () => Date }).getStartDate?.();
    return d && !Number.isNaN(d.getTime()) ? new Date(d.getTime() + video.currentTime * 1000) : null;
  };
} else {
  state.errors.push("this browser plays neither MSE nor HLS");
}
video.play().catch(() => {});

setInterval(() => {
  const d = playingDate();
  state.behindMs = d && !video.paused ? Date.now() - d.getTime() : null;
  const behind = state.behindMs === null ? "–" : `${(state.behindMs / 1000).toFixed(1)} s`;
  const { peers, seeds, http } = state.bytes;
  const all = peers + seeds + http;
  const share = (x: number) => (all > 0 ? `${Math.round((100 * x) / all)} %` : "–");
  overlay.textContent = state.peer
    ? `behind live ${behind} · peers ${state.neighbours} · from pages ${share(peers)} · seeders ${share(seeds)} · HTTP ${share(http)}`
    : `behind live ${behind} · HLS from the seeder (no swarm on this page)`;
}, 500);
