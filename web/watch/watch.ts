// The watch page's player (served by a seeder at /watch/{channel}). hls.js plays the
// channel's LL-HLS; when the page is told the channel and the tracker (<body
// data-channel-id data-tracker>), it also joins the swarm as a peer (web/src/peer.ts):
// it gets pushed pieces over WebRTC data channels from seeders and other pages,
// verifies each, passes on its share, and hls.js takes parts and segments from those
// pieces, fetching over HTTP only what the swarm did not bring in time. Safari without
// MSE plays the HLS natively. The overlay shows how far behind live it plays, its
// neighbours, and where its bytes came from.

import Hls from "hls.js/light";

import { HLS_SETTINGS, type SwarmState, iceServersOf, joinSwarm, newSwarmState } from "./swarm.js";

/** What the page exposes to its tests and to a curious viewer's console. */
interface WatchState extends SwarmState {
  behindMs: number | null;
  started: boolean;
  /** Times it skipped ahead to its target latency. */
  skips: number;
  /**
   * When (performance.now(), ms since the page was opened) startup's steps first
   * happened: the playlist loaded, the first media (part or segment) loaded and
   * buffered, and the video played.
   */
  marks: { playlist?: number; media?: number; buffered?: number; playing?: number };
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
const state: WatchState = { ...newSwarmState(), behindMs: null, started: false, skips: 0, marks: {} };
window.watch = state;
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


/** The page's `data-ice-servers` (none, with an error noted, if it is not JSON). */
function pageIceServers(): RTCIceServer[] {
  try {
    return iceServersOf(JSON.parse(data.iceServers ?? "null"));
  } catch {
    state.errors.push("the page's ICE servers are not JSON: none used");
    return [];
  }
}

let playingDate: () => Date | null = () => null;
if (Hls.isSupported()) {
  const substreams = Number(data.substreams);
  // `?p2p=0` plays the seeder's HLS only (for comparison, or a network that blocks WebRTC).
  const allowed = new URLSearchParams(location.search).get("p2p") !== "0";
  const p2p =
    allowed && data.channelId && data.tracker && typeof RTCPeerConnection === "function" && substreams > 0
      ? joinSwarm({
          channelHex: data.channelId,
          trackerUrl: data.tracker,
          substreams,
          iceServers: pageIceServers(),
          video,
          state,
          httpLoader: Hls.DefaultConfig.loader,
        })
      : null;
  const hls = new Hls({ ...HLS_SETTINGS, ...(p2p ?? {}) });
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
