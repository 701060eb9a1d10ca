// What the browser tests load into a page: a tracker client that, on each data channel
// that opens, sends a Shoal `Hello` and records the messages the other side sends.

import { infoHash } from "../src/piece.js";
import { TrackerClient } from "../src/tracker.js";
import { ChannelTransport } from "../src/transport.js";
import { PROTOCOL_VERSION, Role } from "../src/wire.js";

interface Seen {
  announced: number;
  opened: number;
  hellos: string[];
  errors: string[];
}

declare global {
  interface Window {
    shoal: { start(url: string, channelHex: string, id: number, offers: number): void; seen: Seen };
  }
}

const seen: Seen = { announced: 0, opened: 0, hellos: [], errors: [] };
const hex = (s: string) => Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));

window.shoal = {
  seen,
  start(url, channelHex, id, offers) {
    const channel = hex(channelHex);
    const peerId = new Uint8Array(20);
    new DataView(peerId.buffer).setUint32(16, id);
    const client = new TrackerClient({
      url,
      infoHash: infoHash(channel),
      peerId,
      onAnnounced: () => {
        seen.announced += 1;
      },
      onError: (why) => seen.errors.push(why),
      onChannel: (dc) => {
        seen.opened += 1;
        dc.binaryType = "arraybuffer";
        const transport = new ChannelTransport(dc);
        dc.addEventListener("message", (e) => {
          for (const m of transport.receive(new Uint8Array(e.data as ArrayBuffer))) {
            if (m.kind === "hello") seen.hellos.push(m.hello.peerId.toString());
          }
        });
        const hello = {
          version: PROTOCOL_VERSION,
          channel,
          peerId: BigInt(id),
          role: Role.Viewer,
          reachable: false,
          nSubstreams: 4,
          uploadKbps: 1_000,
        };
        transport.send({ kind: "hello", hello });
      },
    });
    client.announce(offers).catch((e) => seen.errors.push(String(e)));
  },
};
