/**
 * Images uploaded to the edit demos. An upload is checked in three steps, cheapest first: its size (the route's
 * body limit), then its format and pixel count from the header alone, so that a decompression bomb (a 20000 x
 * 20000 PNG is a few hundred KB) is refused before a single row is decoded, then one full decode (shrunk on load
 * where the format allows), which refuses corrupt and truncated files. Accepted images are kept by content hash
 * in a store bounded by total bytes, so that edits can name them without sending them again.
 */
import { createHash } from 'node:crypto';
import sharp, { type Metadata } from 'sharp';

/** An upload refused, with the HTTP status that says why. */
export class UploadRejected extends Error {
  constructor(
    readonly statusCode: 400 | 413 | 415,
    message: string,
  ) {
    super(message);
  }
}

/** Raster formats that libvips decodes without rendering (no SVG, PDF or other documents). */
const FORMATS = new Set(['png', 'jpeg', 'webp', 'gif', 'tiff', 'avif', 'heif']);

/** libvips repeats its messages line by line; the first says what is wrong. */
const firstLine = (e: unknown) => (e as Error).message.split('\n')[0].trim();

/** Checks an upload's header and decodes it once; returns its size. Throws UploadRejected. */
export async function checkUpload(bytes: Buffer, maxPixels: number): Promise<{ width: number; height: number }> {
  if (!bytes.length) throw new UploadRejected(400, 'the upload is empty');
  let meta: Metadata;
  try {
    // Only the header is read here; the pixel limit below is ours, with a message that says so.
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (e) {
    throw new UploadRejected(400, `not a readable image (${firstLine(e)})`);
  }
  if (!meta.format || !FORMATS.has(meta.format)) throw new UploadRejected(415, `${meta.format ?? 'this'} files are not accepted; upload a PNG, JPEG, WebP, GIF, TIFF or AVIF image`);
  const { width = 0, height = 0 } = meta;
  if (!width || !height) throw new UploadRejected(400, 'the image has no pixels');
  if (width * height > maxPixels) throw new UploadRejected(413, `the image is ${width} x ${height} = ${width * height} pixels; the limit is ${maxPixels}`);
  try {
    // failOn 'error' refuses truncated data instead of filling it with grey; limitInputPixels guards the decoder.
    await sharp(bytes, { failOn: 'error', limitInputPixels: maxPixels }).resize(64, 64, { fit: 'inside' }).raw().toBuffer();
  } catch (e) {
    throw new UploadRejected(400, `the image cannot be decoded (${firstLine(e)})`);
  }
  return { width, height };
}

/** Accepted uploads by SHA-256, least recently used dropped beyond `maxBytes` in total. */
export class UploadStore {
  private readonly files = new Map<string, Buffer>();
  private bytes = 0;

  constructor(readonly maxBytes: number) {}

  static idOf(bytes: Buffer): string {
    return createHash('sha256').update(bytes).digest('hex');
  }

  add(bytes: Buffer): string {
    const id = UploadStore.idOf(bytes);
    if (!this.get(id)) {
      this.files.set(id, bytes);
      this.bytes += bytes.length;
      for (const [old, b] of this.files) {
        if (this.bytes <= this.maxBytes || old === id) break;
        this.files.delete(old);
        this.bytes -= b.length;
      }
    }
    return id;
  }

  get(id: string): Buffer | undefined {
    const b = this.files.get(id);
    if (b) {
      this.files.delete(id);
      this.files.set(id, b);
    }
    return b;
  }
}
