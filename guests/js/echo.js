// The echo server in JavaScript, calling wasi:sockets directly.
//
// Built into a component with componentize-js (SpiderMonkey) against the
// same world as the Rust guest (wit/echo.wit); see build.mjs. One client at
// a time, like the study notes' server. A client's streams are dropped before its socket
// (Symbol.dispose): the wasmtime CLI traps on the other order ("resource
// has children").

import { getEnvironment } from 'wasi:cli/environment@0.2.12';
import { instanceNetwork } from 'wasi:sockets/instance-network@0.2.12';
import { createTcpSocket } from 'wasi:sockets/tcp-create-socket@0.2.12';

const DEFAULT_LISTEN_ADDR = '0.0.0.0:9000';
const BUFSIZE = 4096n;
const SOMAXCONN = 4096n;

function listenAddr() {
  const env = new Map(getEnvironment());
  const text = (env.get('LISTEN_ADDR') ?? DEFAULT_LISTEN_ADDR).split(',')[0];
  const at = text.lastIndexOf(':');
  const octets = text.slice(0, at).split('.').map(Number);
  return { tag: 'ipv4', val: { port: Number(text.slice(at + 1)), address: octets } };
}

// start-X / finish-X: finish answers would-block until it is done.
function finish(sock, step) {
  const ready = sock.subscribe();
  try {
    for (;;) {
      try {
        return step();
      } catch (e) {
        if (e.payload !== 'would-block') throw e;
        ready.block();
      }
    }
  } finally {
    ready[Symbol.dispose]();
  }
}

// send(): no more than check-write allows at a time, then flush.
function sendAll(tx, data) {
  const writable = tx.subscribe();
  try {
    while (data.length > 0) {
      const allowed = Number(tx.checkWrite());
      if (allowed === 0) {
        writable.block();
        continue;
      }
      tx.write(data.subarray(0, allowed));
      data = data.subarray(allowed);
    }
  } finally {
    writable[Symbol.dispose]();
  }
  tx.blockingFlush();
}

// recv() and send() until the client closes its side.
function echo(rx, tx) {
  for (;;) {
    let data;
    try {
      data = rx.blockingRead(BUFSIZE); // recv()
    } catch (e) {
      if (e.payload?.tag !== 'closed') console.log('[js echo] recv() failed');
      return; // closed: recv() == 0
    }
    try {
      sendAll(tx, data); // send()
    } catch (e) {
      console.log('[js echo] send() failed');
      return;
    }
  }
}

function main() {
  // WSAStartup(): not needed; the host grants the network.
  const network = instanceNetwork();
  const addr = listenAddr();
  const sock = createTcpSocket('ipv4'); // socket()
  sock.startBind(network, addr); // bind()
  finish(sock, () => sock.finishBind());
  sock.setListenBacklogSize(SOMAXCONN); // listen()
  sock.startListen();
  finish(sock, () => sock.finishListen());
  console.log(`[js echo] listening on ${addr.val.address.join('.')}:${addr.val.port}`);

  const acceptReady = sock.subscribe();
  for (;;) {
    let accepted;
    try {
      accepted = sock.accept(); // accept()
    } catch (e) {
      if (e.payload === 'would-block') acceptReady.block();
      else console.log(`[js echo] accept() failed: ${e.payload}`);
      continue;
    }
    const [client, rx, tx] = accepted;
    echo(rx, tx);
    // closesocket(): the streams first, then the socket.
    tx[Symbol.dispose]();
    rx[Symbol.dispose]();
    client[Symbol.dispose]();
  }
}

export const run = {
  run() {
    main();
  },
};
