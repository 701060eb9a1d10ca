// The comparison page for `shoal bench browsers --vs-p2pml`: hls.js with
// p2p-media-loader 2.x (the P2P loader PeerTube uses), as its README sets it up — whole
// HLS segments shared over WebRTC between pages that meet on a WebTorrent tracker —
// against the same seeder's HLS as its "CDN". It keeps hls.js's defaults, as
// p2p-media-loader is run (it shares segments, not LL-HLS parts); only the tracker and
// the ICE servers are set (loopback: no STUN). Exposes `window.watch` with the fields
// pages.mjs reads from Shoal's watch page.
import Hls from "hls.js";
import { HlsJsP2PEngine } from "p2p-media-loader-hlsjs";

const video = document.getElementById("v") as HTMLVideoElement;
const data = document.body.dataset;
const state = {
  kind: "p2pml",
  behindMs: null as number | null,
  errors: [] as string[],
  started: false,
  bytes: { peers: 0, seeds: 0, http: 0 },
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
  p2p: {
    core: { announceTrackers: [data.tracker ?? ""], rtcConfig: { iceServers: [] } },
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
hls.loadSource(data.src ?? "");
hls.attachMedia(video);
(window as unknown as { hls: Hls }).hls = hls;
video.play().catch(() => {});
setInterval(() => {
  const d = hls.playingDate;
  state.behindMs = d && !video.paused ? Date.now() - d.getTime() : null;
}, 500);
