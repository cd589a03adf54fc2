// The echo server as one instance per client (the host's --per-client).
//
// The host accepts each client and starts a fresh instance of this
// component with the client's connection as stdin and stdout: what is left
// of the study notes' server is its recv/send loop. Built with
// componentize-js against the `echo-stdio` world (wit/echo.wit):
//   node guests/js/build.mjs --per-client OUT.wasm
import { getEnvironment } from 'wasi:cli/environment@0.2.12';
import { getStderr } from 'wasi:cli/stderr@0.2.12';
import { getStdin } from 'wasi:cli/stdin@0.2.12';
import { getStdout } from 'wasi:cli/stdout@0.2.12';

const BUFSIZE = 4096n;

function main() {
  const client = getEnvironment().find(([key]) => key === 'REMOTE_ADDR')?.[1] ?? '?';
  const log = getStderr();
  log.blockingWriteAndFlush(new TextEncoder().encode(`[js] serving ${client}\n`));
  const connection = getStdin();
  const reply = getStdout();
  for (;;) {
    let data;
    try {
      data = connection.blockingRead(BUFSIZE); // recv()
    } catch (e) {
      if (e.payload?.tag !== 'closed') throw e;
      return; // the client closed: recv() == 0
    }
    // send(): blockingWriteAndFlush takes at most 4096 bytes at a time.
    reply.blockingWriteAndFlush(data);
  }
}

export const run = {
  run() {
    main();
  },
};
