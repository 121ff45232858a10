// Reading an exact byte range of an open file (a read may return fewer bytes than asked).

import type { FileHandle } from 'node:fs/promises';

/** `length` bytes at `position`; `onEnd` throws when the file ends first. */
export async function readExactly(fh: FileHandle, length: number, position: number, onEnd: () => never): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) onEnd();
    done += bytesRead;
  }
  return buf;
}
