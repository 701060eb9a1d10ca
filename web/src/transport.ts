// A WebRTC data channel as a stream transport (PROTOCOL.md §2): frames back to back,
// cut into data-channel messages of at most 16 KiB (the size every browser's SCTP
// stack takes without negotiation), reassembled by a FrameDecoder on the other side.

import { FrameDecoder, type Message, encode } from "./wire.js";

/** Largest data-channel message sent. */
export const CHUNK = 16 * 1024;

/** What a transport needs of a data channel (an RTCDataChannel has it). */
export interface Channel {
  send(data: Uint8Array<ArrayBuffer>): void;
  readonly bufferedAmount: number;
}

export class ChannelTransport {
  private readonly decoder = new FrameDecoder();

  constructor(private readonly channel: Channel) {}

  /** Sends `msg`, as one or more messages of at most {@link CHUNK} bytes. */
  send(msg: Message): void {
    const frame = encode(msg);
    for (let at = 0; at < frame.length; at += CHUNK) {
      this.channel.send(frame.subarray(at, at + CHUNK));
    }
  }

  /** Bytes queued in the channel, not yet on the wire (what the uplink still owes). */
  get queued(): number {
    return this.channel.bufferedAmount;
  }

  /** A data-channel message arrived: the whole messages it completes. */
  receive(data: Uint8Array): Message[] {
    this.decoder.extend(data);
    const out: Message[] = [];
    for (let m = this.decoder.next(); m !== null; m = this.decoder.next()) out.push(m);
    return out;
  }
}
