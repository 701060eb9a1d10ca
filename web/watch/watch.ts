// The watch page's player (served by a seeder at /watch/{channel}): the channel's
// LL-HLS from the seeder in hls.js (Safari plays it natively), muted until the viewer
// unmutes, with a small overlay of how far behind live it plays. The page reads its
// playlist URL from <body data-src>. Peer-to-peer delivery is not wired in yet: the
// overlay says so rather than show a made-up share.

import Hls from "hls.js/light";

declare global {
  interface Window {
    watch: { behindMs: number | null; errors: string[]; started: boolean };
  }
}

const video = document.getElementById("v") as HTMLVideoElement;
const overlay = document.getElementById("stats") as HTMLElement;
const unmute = document.getElementById("unmute") as HTMLButtonElement;
const src = document.body.dataset.src ?? "";
const state: Window["watch"] = { behindMs: null, errors: [], started: false };
window.watch = state;

unmute.addEventListener("click", () => {
  video.muted = !video.muted;
  unmute.textContent = video.muted ? "Unmute" : "Mute";
});
video.addEventListener("playing", () => {
  state.started = true;
});

let playingDate: () => Date | null = () => null;
if (Hls.isSupported()) {
  const hls = new Hls({ lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 });
  hls.on(Hls.Events.ERROR, (_e, d) => {
    state.errors.push(`${d.type}:${d.details}${d.fatal ? ":fatal" : ""}`);
    if (d.fatal && d.type === Hls.ErrorTypes.NETWORK_ERROR) hls.startLoad();
    else if (d.fatal && d.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
  });
  hls.loadSource(src);
  hls.attachMedia(video);
  playingDate = () => hls.playingDate;
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
  overlay.textContent = `behind live ${behind} · peers 0 · from peers 0 % (P2P not yet in browsers: HLS from the seeder)`;
}, 500);
