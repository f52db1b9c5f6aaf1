// Reads a Parquet file with hyparquet (a reader written elsewhere, from npm) and fzstd for its
// ZSTD pages, and prints the rows as JSON: the browser test's second opinion on downloads.
import { parquetReadObjects } from 'hyparquet'
import { decompress } from 'fzstd'
import fs from 'node:fs'

const buf = fs.readFileSync(process.argv[2])
const file = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength)
const compressors = { ZSTD: (input) => decompress(input) }
const rows = await parquetReadObjects({ file, compressors })
console.log(JSON.stringify(rows, (k, v) => (typeof v === 'bigint' ? Number(v) : v)))
