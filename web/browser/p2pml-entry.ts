// The comparison page for `shoal bench browsers --vs-p2pml`: hls.js with
// p2p-media-loader 2.x (the P2P loader PeerTube uses), as its README sets it up — whole
// HLS segments shared over WebRTC between pages that meet on a WebTorrent tracker —
// against the same seeder's HLS as its "CDN" (the plain playlist: it shares whole
// segments, LL-HLS parts would bypass it, and blocking reloads make it lose track of the
// playlist — PeerTube turns P2P off in low-latency mode for that reason). It keeps
// hls.js's and its own defaults but for LL-HLS off, the tracker, the ICE servers
// (loopback: no STUN) and one setting tuned for this live edge: its default
// `highDemandTimeWindow` (15 s) makes every segment of a 6 s playlist urgent, so every
// page loads each over HTTP at once (measured: p2p share 0.000); at 2 s, segments
// further ahead are shared. Exposes `window.watch` with the fields pages.mjs
// reads from Shoal's watch page; `bytes.loaded` is what hls.js got, to check that
// every byte went through p2p-media-loader.
import Hls from "hls.js";
import { HlsJsP2PEngine } from "p2p-media-loader-hlsjs";

const video = document.getElementById("v") as HTMLVideoElement;
const data = document.body.dataset;
const state = {
  kind: "p2pml",
  behindMs: null as number | null,
  errors: [] as string[],
  started: false,
  bytes: { peers: 0, seeds: 0, http: 0, loaded: 0 },
  neighbours: 0,
  skips: 0,
  watchedS: 0,
  peer: null,
};
(window as unknown as { watch: typeof state }).watch = state;
video.addEventListener("playing", () => {
  state.started = true;
});

const HlsWithP2P = HlsJsP2PEngine.injectMixin(Hls);
const hls = new HlsWithP2P({
  lowLatencyMode: false,
  p2p: {
    core: { announceTrackers: [data.tracker ?? ""], rtcConfig: { iceServers: [] }, highDemandTimeWindow: 2 },
    onHlsJsCreated(h) {
      h.p2pEngine.addEventListener("onChunkDownloaded", (bytes, source) => {
        if (source === "p2p") state.bytes.peers += bytes;
        else state.bytes.http += bytes;
      });
      h.p2pEngine.addEventListener("onPeerConnect", () => {
        state.neighbours += 1;
      });
      h.p2pEngine.addEventListener("onPeerClose", () => {
        state.neighbours -= 1;
      });
    },
  },
});
hls.on(Hls.Events.ERROR, (_e, d) => {
  state.errors.push(`${d.type}:${d.details}${d.fatal ? ":fatal" : ""}`);
  if (d.fatal && d.type === Hls.ErrorTypes.NETWORK_ERROR) hls.startLoad();
  else if (d.fatal && d.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
});
hls.on(Hls.Events.FRAG_LOADED, (_e, d) => {
  state.bytes.loaded += d.payload.byteLength;
});
hls.loadSource(data.src ?? "");
hls.attachMedia(video);
(window as unknown as { hls: Hls }).hls = hls;
video.play().catch(() => {});
setInterval(() => {
  const d = hls.playingDate;
  state.behindMs = d && !video.paused ? Date.now() - d.getTime() : null;
}, 500);
