// What the ecosystem test loads into a page: the npm `bittorrent-tracker` client (the
// one p2p-media-loader and WebTorrent use), announcing a channel's info-hash on Shoal's
// tracker WebSocket with its own WebRTC offers. Records what the tracker answered and
// what arrived on each data channel the client opened.
import Client from "bittorrent-tracker";

import { infoHash } from "../src/piece.js";

interface Seen {
  updates: { complete: number; incomplete: number }[];
  warnings: string[];
  errors: string[];
  connected: number;
  got: string[];
}

declare global {
  interface Window {
    bt: { start(url: string, channelHex: string, name: string, raw?: boolean): void; seen: Seen };
  }
}

const seen: Seen = { updates: [], warnings: [], errors: [], connected: 0, got: [] };
const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

window.bt = {
  seen,
  /** Announces `channelHex`'s info-hash (or, with `raw`, `channelHex` taken as the info-hash itself). */
  start(url, channelHex, name, raw = false) {
    const channel = Uint8Array.from(channelHex.match(/../g) ?? [], (h) => parseInt(h, 16));
    const peerId = new Uint8Array(20);
    crypto.getRandomValues(peerId);
    const client = new Client({ infoHash: raw ? channelHex : hex(infoHash(channel)), peerId: hex(peerId), announce: [url], port: 6881 });
    client.on("update", (d: { complete: number; incomplete: number }) => seen.updates.push({ complete: d.complete, incomplete: d.incomplete }));
    client.on("warning", (e: Error) => seen.warnings.push(e.message));
    client.on("error", (e: Error) => seen.errors.push(e.message));
    client.on("peer", (peer) => {
      const hello = () => {
        seen.connected += 1;
        peer.send(`hello from ${name}`);
      };
      if (peer.connected) hello();
      else peer.once("connect", hello);
      peer.on("data", (d: Uint8Array) => seen.got.push(new TextDecoder().decode(d)));
      peer.on("error", (e: Error) => seen.errors.push(`peer: ${e.message}`));
    });
    client.start();
  },
};
