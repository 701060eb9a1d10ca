// For sites that have their own hls.js player: the script a seeder serves at
// /watch/shoal-hls.js. It gives the site's hls.js what the watch page's has — the
// channel's swarm over WebRTC, every piece verified before it plays, HTTP from the
// seeder for what the swarm does not bring in time:
//
//   <script src="http://SEEDER:8730/watch/shoal-hls.js"></script>
//   <script>
//     Shoal.hls(Hls, video, "http://SEEDER:8730/watch/CHANNEL").then(({ src, config }) => {
//       const hls = new Hls(config);
//       hls.loadSource(src);
//       hls.attachMedia(video);
//     });
//   </script>
//
// It asks the seeder for the channel (GET /watch/CHANNEL.json: the playlist, the
// channel's key, the tracker's WebSocket, the STUN/TURN servers); a seeder without
// WebRTC, or a browser without it, gets plain LL-HLS settings.

import { HLS_SETTINGS, type SwarmState, iceServersOf, joinSwarm, newSwarmState } from "./swarm.js";

/** What the site's hls.js is given. */
interface Swarmed {
  /** The channel's LL-HLS playlist. */
  src: string;
  /** Settings for `new Hls(config)`: low latency, and the swarm's loaders. */
  config: Record<string, unknown>;
  /** What the swarm did (bytes by where they came from, neighbours, errors, log). */
  state: SwarmState;
}

/** The channel a seeder's watch URL names, for `Hls` (the site's hls.js) playing into `video`. */
async function hls(Hls: { DefaultConfig: { loader: unknown } }, video: HTMLVideoElement, watchUrl: string): Promise<Swarmed> {
  const url = new URL(watchUrl, location.href);
  url.pathname = `${url.pathname.replace(/\/$/, "")}.json`;
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  const c = (await res.json()) as Record<string, unknown>;
  const text = (k: string) => (typeof c[k] === "string" ? (c[k] as string) : "");
  if (!text("src")) throw new Error(`${url} names no playlist`);
  const state = newSwarmState();
  const substreams = typeof c.substreams === "number" ? c.substreams : 0;
  const swarm =
    text("channel_id") && text("tracker") && typeof RTCPeerConnection === "function" && substreams > 0
      ? joinSwarm({
          channelHex: text("channel_id"),
          trackerUrl: text("tracker"),
          substreams,
          iceServers: iceServersOf(c.ice_servers),
          video,
          state,
          httpLoader: Hls.DefaultConfig.loader,
        })
      : null;
  return { src: new URL(text("src"), url).href, config: { ...HLS_SETTINGS, ...(swarm ?? {}) }, state };
}

(window as unknown as { Shoal: unknown }).Shoal = { hls };
