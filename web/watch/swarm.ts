// The swarm side of a page that plays a channel with hls.js: joins the channel's swarm
// through the tracker's WebSocket (web/src/tracker.ts) as a peer (web/src/peer.ts),
// meters what plays, and gives hls.js loaders that answer parts and segments from the
// verified pieces (web/src/loader.ts). The seeder's watch page (watch.ts) and the
// script sites with their own hls.js player include (embed.ts) both use it.

import { PieceMap, swarmLoaders } from "../src/loader.js";
import { HourMeter } from "../src/metering.js";
import { PagePeer, peerIdOf } from "../src/peer.js";
import { Flags, infoHash } from "../src/piece.js";
import { TrackerClient } from "../src/tracker.js";

/** What a page's swarm did: for its overlay, its tests and a curious viewer's console. */
export interface SwarmState {
  errors: string[];
  /** Bytes played, by where they came from. */
  bytes: { peers: number; seeds: number; http: number };
  neighbours: number;
  forgedRefused: number;
  /** Seconds watched this UTC hour (and, early in it, the last), as told to the tracker. */
  watchedS: number;
  peer: PagePeer | null;
  /**
   * The swarm's last events (parents chosen and dropped, links closed, parts fetched
   * over HTTP), each after its performance.now() ms: what a stall is explained by.
   */
  log: string[];
}

export function newSwarmState(): SwarmState {
  return { errors: [], bytes: { peers: 0, seeds: 0, http: 0 }, neighbours: 0, forgedRefused: 0, watchedS: 0, peer: null, log: [] };
}

/** Events kept in {@link SwarmState.log}. */
const LOG_KEPT = 5000;

/** Appends to `state`'s log, keeping its last {@link LOG_KEPT} lines. */
export function logInto(state: SwarmState): (what: string) => void {
  return (what) => {
    state.log.push(`${Math.round(performance.now())} ${what}`);
    if (state.log.length > LOG_KEPT) state.log.splice(0, state.log.length - LOG_KEPT);
  };
}

const hex = (s: string) => Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));

/**
 * hls.js settings for low latency: playing 1.2 s behind the playlist's edge leaves room
 * for a late part (from a peer that left, or HTTP after the swarm) without a stall; a
 * stall adds 0.1 s to it (hls.js's default, 1 s, would hold a page seconds behind after
 * one hiccup).
 */
export const HLS_SETTINGS = {
  lowLatencyMode: true,
  liveSyncDuration: 1.2,
  maxLiveSyncPlaybackRate: 1.5,
  liveSyncOnStallIncrease: 0.1,
};

/** Neighbours a page keeps looking for. */
const WANTED_NEIGHBOURS = 8;

/** The STUN and TURN servers the seeder names (`--ice-server`); none unless a list. */
export function iceServersOf(list: unknown): RTCIceServer[] {
  return Array.isArray(list) ? (list as RTCIceServer[]) : [];
}

/** Where to join and what to report into. */
export interface JoinOptions {
  /** The channel's id (its public key), 64 hex digits. */
  channelHex: string;
  /** The tracker's WebSocket, `ws://HOST:PORT/announce`. */
  trackerUrl: string;
  substreams: number;
  iceServers: RTCIceServer[];
  /** What plays: its time and pauses are metered. */
  video: HTMLVideoElement;
  state: SwarmState;
  /** hls.js's own loader (`Hls.DefaultConfig.loader`): what fetches over HTTP. */
  httpLoader: unknown;
}

/** Joins the swarm; returns the loaders hls.js should use. */
export function joinSwarm(o: JoinOptions) {
  const { channelHex, trackerUrl, substreams, iceServers, video, state } = o;
  const log = logInto(state);
  const metering = new HourMeter();
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
  return swarmLoaders(o.httpLoader as never, map, swarm, report);
}

