// The parts of the WebTorrent ecosystem's npm packages the browser tests and the
// p2p-media-loader comparison use (the packages ship JavaScript without types).
declare module "bittorrent-tracker" {
  import { EventEmitter } from "events";

  /** A simple-peer connection the client hands out once the tracker relayed its offer/answer. */
  export interface SimplePeer extends EventEmitter {
    id: string;
    connected: boolean;
    send(data: string | Uint8Array): void;
    destroy(): void;
  }

  export interface ClientOptions {
    infoHash: string | Uint8Array;
    peerId: string | Uint8Array;
    announce: string[];
    port?: number;
  }

  export default class Client extends EventEmitter {
    constructor(opts: ClientOptions);
    start(opts?: Record<string, unknown>): void;
    stop(opts?: Record<string, unknown>): void;
    destroy(cb?: () => void): void;
  }
}
