// A PostgreSQL wire-protocol server in front of PGlite with TimescaleDB, for the test suite.
//
//   node bridge.mjs [--host 127.0.0.1] [--port 0] [--data-dir DIR]
//
// Prints one JSON line {"port": N} on stdout once it accepts connections. One in-memory database
// (or DIR) serves ONE client connection at a time: PGlite is a single backend, so a second client
// waits (up to --wait seconds) for the first to leave, then is refused with SQLSTATE 53300.
// When a client leaves, its transaction is rolled back and its session reset (DISCARD ALL).
//
// What it does beyond passing bytes through:
//  - frames the protocol (a message may span many TCP reads, a read may hold many messages) and
//    sends PGlite whole batches ending at Query / Sync / Flush;
//  - answers SSLRequest / GSSENCRequest with 'N' and handles the startup itself (no password;
//    startup parameters and `options=-c name=value` are applied with set_config);
//  - COPY ... FROM STDIN: PGlite needs the statement and all its data in one call, so the bridge
//    answers CopyInResponse itself, buffers CopyData until CopyDone/CopyFail and then runs it all.
// No background workers run inside PGlite: run TimescaleDB policies with CALL run_job(id).

import net from 'node:net'
import { parseArgs } from 'node:util'
import { PGlite } from '@electric-sql/pglite'
import { timescaledb } from '@electric-sql/pglite/timescaledb'

const { values: opts } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    'data-dir': { type: 'string' },
    wait: { type: 'string', default: '30' },
  },
})

const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104
const CANCEL_REQUEST = 80877102
const PROTOCOL_3 = 196608
const REPORTED = ['server_version', 'server_encoding', 'client_encoding', 'application_name', 'DateStyle',
  'IntervalStyle', 'TimeZone', 'integer_datetimes', 'standard_conforming_strings', 'is_superuser',
  'session_authorization']
const COPY_FROM_STDIN = /^\s*copy\b[\s\S]*\bfrom\s+stdin\b/i
const COPY_MESSAGE = 1 << 23
const COPY_BINARY = /\bformat\s*\(?\s*binary\b|\bbinary\b/i

const literal = (s) => `'${String(s).replace(/'/g, "''")}'`

const db = await PGlite.create({ dataDir: opts['data-dir'], extensions: { timescaledb } })

// ---------------------------------------------------------------- messages

function message(type, body) {
  const out = Buffer.allocUnsafe(5 + body.length)
  out.write(type, 0, 'latin1')
  out.writeInt32BE(4 + body.length, 1)
  body.copy(out, 5)
  return out
}

const cstr = (s) => Buffer.from(`${s}\0`, 'utf8')
const query = (text) => message('Q', cstr(text))

function errorResponse(severity, code, text) {
  return message('E', Buffer.concat([cstr(`S${severity}`), cstr(`V${severity}`), cstr(`C${code}`),
    cstr(`M${text}`), Buffer.from([0])]))
}

function int32(n) {
  const b = Buffer.allocUnsafe(4)
  b.writeInt32BE(n)
  return b
}

/** Split raw backend output into [type, body] pairs. */
function* backendMessages(buf) {
  let at = 0
  while (at + 5 <= buf.length) {
    const len = buf.readInt32BE(at + 1)
    yield [String.fromCharCode(buf[at]), buf.subarray(at + 5, at + 1 + len), buf.subarray(at, at + 1 + len)]
    at += 1 + len
  }
}

/** Run raw protocol bytes on PGlite; its reply as a Buffer. */
async function run(bytes) {
  const out = await db.execProtocolRaw(bytes, { syncToFs: false })
  return Buffer.from(out.buffer, out.byteOffset, out.byteLength)
}

/** Run one simple query; the first column of the first row (text) and the error text, if any. */
async function scalar(text) {
  let value = null
  let error = null
  for (const [type, body] of backendMessages(await run(query(text)))) {
    if (type === 'D' && value === null && body.readInt16BE(0) > 0) {
      const len = body.readInt32BE(2)
      value = len < 0 ? null : body.subarray(6, 6 + len).toString('utf8')
    } else if (type === 'E' && error === null) {
      error = body.toString('utf8').split('\0').find((f) => f.startsWith('M'))?.slice(1) ?? 'error'
    }
  }
  return { value, error }
}

/** [Query, CopyData..., CopyDone|CopyFail] as one buffer, the CopyData merged into large messages:
 * COPY data is a byte stream (message boundaries mean nothing) and PGlite loads large messages
 * faster (measured, 1M-row text COPY: 8 KB messages 88k rows/s, 1 MB messages 150k rows/s). */
function coalesceCopy(parts) {
  const out = [parts[0]]
  let run = []
  let size = 0
  const flush = () => {
    if (size) out.push(message('d', Buffer.concat(run.map((raw) => raw.subarray(5)), size)))
    run = []
    size = 0
  }
  for (const raw of parts.slice(1)) {
    if (raw[0] !== 0x64) {
      flush()
      out.push(raw)
      continue
    }
    if (size + raw.length - 5 > COPY_MESSAGE) flush()
    run.push(raw)
    size += raw.length - 5
  }
  flush()
  return Buffer.concat(out)
}

// ---------------------------------------------------------------- one connection at a time

let busy = false
const waiting = []

function acquire(seconds) {
  if (!busy) {
    busy = true
    return Promise.resolve(true)
  }
  return new Promise((resolve) => {
    const entry = { resolve, timer: null }
    entry.timer = setTimeout(() => {
      waiting.splice(waiting.indexOf(entry), 1)
      resolve(false)
    }, seconds * 1000)
    waiting.push(entry)
  })
}

function release() {
  const next = waiting.shift()
  if (next) {
    clearTimeout(next.timer)
    next.resolve(true)
  } else {
    busy = false
  }
}

// PGlite sets some session values (search_path) after boot; DISCARD ALL would reset them to
// the boot values, so each reset restores what a fresh PGlite session had.
const baseline = (await db.query("SELECT name, setting FROM pg_settings WHERE source = 'session'")).rows
const restore = baseline.map((r) => `SELECT set_config(${literal(r.name)}, ${literal(r.setting)}, false)`)

/** Leave the single backend clean for the next client. */
async function resetSession() {
  await run(query('ROLLBACK'))
  await run(query('DISCARD ALL'))
  for (const text of restore) await run(query(text))
}

// ---------------------------------------------------------------- framing

/** Incoming bytes as a list of chunks; messages are read across chunk boundaries without re-copying. */
class Reader {
  constructor() {
    this.chunks = []
    this.length = 0
  }

  push(chunk) {
    this.chunks.push(chunk)
    this.length += chunk.length
  }

  peek(n) {
    if (this.chunks[0].length >= n) return this.chunks[0]
    return Buffer.concat(this.chunks, n)
  }

  take(n) {
    this.length -= n
    const first = this.chunks[0]
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift()
      else this.chunks[0] = first.subarray(n)
      return first.subarray(0, n)
    }
    const parts = []
    let left = n
    while (left > 0) {
      const c = this.chunks[0]
      if (c.length <= left) {
        parts.push(this.chunks.shift())
        left -= c.length
      } else {
        parts.push(c.subarray(0, left))
        this.chunks[0] = c.subarray(left)
        left = 0
      }
    }
    return Buffer.concat(parts, n)
  }

  /** The next startup-phase packet (no type byte), or null if incomplete. */
  startupPacket() {
    if (this.length < 4) return null
    const len = this.peek(4).readInt32BE(0)
    if (len < 8 || len > 10000) throw new Error(`bad startup packet length ${len}`)
    return this.length >= len ? this.take(len) : null
  }

  /** The next whole message [type, body, raw], or null if incomplete. */
  message() {
    if (this.length < 5) return null
    const head = this.peek(5)
    const len = head.readInt32BE(1)
    if (len < 4) throw new Error(`bad message length ${len}`)
    if (this.length < 1 + len) return null
    const raw = this.take(1 + len)
    return [String.fromCharCode(raw[0]), raw.subarray(5), raw]
  }
}

// ---------------------------------------------------------------- a client

function parseOptions(text) {
  // libpq's `options`: whitespace separated, backslash escapes; "-c name=value" or "--name=value"
  const words = []
  let word = ''
  let escape = false
  let any = false
  for (const ch of text) {
    if (escape) {
      word += ch
      escape = false
    } else if (ch === '\\') {
      escape = true
      any = true
    } else if (/\s/.test(ch)) {
      if (any) words.push(word)
      word = ''
      any = false
    } else {
      word += ch
      any = true
    }
  }
  if (any) words.push(word)
  const settings = []
  for (let i = 0; i < words.length; i++) {
    let w = words[i]
    if (w === '-c' && i + 1 < words.length) w = words[++i]
    else if (w.startsWith('-c')) w = w.slice(2)
    else if (w.startsWith('--')) w = w.slice(2)
    else throw new Error(`unsupported startup option ${w}`)
    const eq = w.indexOf('=')
    if (eq < 1) throw new Error(`startup option ${w} is not name=value`)
    settings.push([w.slice(0, eq).replace(/-/g, '_'), w.slice(eq + 1)])
  }
  return settings
}

class Client {
  constructor(socket, id) {
    this.socket = socket
    this.id = id
    this.reader = new Reader()
    this.phase = 'startup' // startup -> waiting -> ready -> closed
    this.owner = false
    this.batch = []
    this.copy = null // [Query, CopyData..., CopyDone] being buffered
    this.chain = Promise.resolve()
    socket.setNoDelay(true)
    socket.on('data', (chunk) => {
      this.reader.push(chunk)
      this.schedule(() => this.pump())
    })
    socket.on('error', () => {})
    socket.on('close', () => this.schedule(() => this.close()))
  }

  schedule(fn) {
    this.chain = this.chain.then(fn).catch((err) => {
      process.stderr.write(`bridge: client ${this.id}: ${err.stack || err}\n`)
      this.socket.destroy()
      return this.close()
    })
  }

  async write(buf) {
    if (this.socket.destroyed || buf.length === 0) return
    if (!this.socket.write(buf)) {
      await new Promise((resolve) => {
        const done = () => {
          this.socket.off('drain', done)
          this.socket.off('close', done)
          resolve()
        }
        this.socket.on('drain', done)
        this.socket.on('close', done)
      })
    }
  }

  async pump() {
    while (this.phase === 'startup') {
      const packet = this.reader.startupPacket()
      if (!packet) return
      const code = packet.readInt32BE(4)
      if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
        await this.write(Buffer.from('N'))
      } else if (code === CANCEL_REQUEST) {
        this.socket.end()
        this.phase = 'closed'
        return
      } else if (code === PROTOCOL_3) {
        await this.startup(packet)
      } else {
        await this.fatal('0A000', `unsupported frontend protocol ${code >> 16}.${code & 0xffff}`)
        return
      }
    }
    if (this.phase !== 'ready') return
    for (let m = this.reader.message(); m; m = this.reader.message()) {
      const [type, body, raw] = m
      if (this.copy) {
        if (type === 'd' || type === 'c' || type === 'f') {
          this.copy.push(raw)
          if (type !== 'd') {
            const parts = this.copy
            this.copy = null
            await this.finishCopy(parts)
          }
        } // Flush/Sync during COPY are ignored, as by PostgreSQL
        continue
      }
      if (type === 'X') {
        await this.flush()
        this.socket.end()
        await this.close()
        return
      }
      if (type === 'Q' && COPY_FROM_STDIN.test(body.toString('utf8'))) {
        await this.flush()
        this.copy = [raw]
        const binary = COPY_BINARY.test(body.toString('utf8')) ? 1 : 0
        await this.write(message('G', Buffer.from([binary, 0, 0])))
        continue
      }
      this.batch.push(raw)
      if (type === 'Q' || type === 'S' || type === 'H') await this.flush()
    }
  }

  async flush() {
    if (!this.batch.length) return
    const bytes = this.batch.length === 1 ? this.batch[0] : Buffer.concat(this.batch)
    this.batch = []
    await this.write(await run(bytes))
  }

  async finishCopy(parts) {
    const out = await run(coalesceCopy(parts))
    // drop PGlite's CopyInResponse: the client had ours
    const first = out.length >= 5 && out[0] === 0x47 ? 1 + out.readInt32BE(1) : 0
    await this.write(out.subarray(first))
  }

  async startup(packet) {
    const fields = packet.subarray(8).toString('utf8').split('\0')
    const params = {}
    for (let i = 0; i + 1 < fields.length && fields[i]; i += 2) params[fields[i]] = fields[i + 1]
    this.phase = 'waiting'
    if (!(await acquire(Number(opts.wait)))) {
      await this.fatal('53300', 'the TimescaleDB test bridge serves one connection at a time and another ' +
        'client kept it: close the other connection first')
      return
    }
    this.owner = true
    if (this.socket.destroyed) {
      await this.close()
      return
    }
    let settings
    try {
      settings = parseOptions(params.options || '')
    } catch (err) {
      await this.fatal('22023', String(err.message))
      return
    }
    for (const [k, v] of Object.entries(params)) {
      if (!['user', 'database', 'options', 'replication'].includes(k)) settings.push([k, v])
    }
    for (const [name, value] of settings) {
      const { error } = await scalar(`SELECT set_config(${literal(name)}, ${literal(value)}, false)`)
      if (error) {
        await this.fatal('22023', `invalid startup parameter ${name}: ${error}`)
        return
      }
    }
    const parts = [message('R', int32(0))]
    for (const name of REPORTED) {
      const { value } = await scalar(`SELECT current_setting(${literal(name)}, true)`)
      if (value !== null) parts.push(message('S', Buffer.concat([cstr(name), cstr(value)])))
    }
    parts.push(message('K', Buffer.concat([int32(process.pid), int32(this.id)])))
    parts.push(message('Z', Buffer.from('I')))
    this.phase = 'ready'
    await this.write(Buffer.concat(parts))
  }

  async fatal(code, text) {
    await this.write(errorResponse('FATAL', code, text))
    this.socket.end()
    await this.close()
  }

  async close() {
    if (this.phase === 'closed') return
    this.phase = 'closed'
    this.batch = []
    this.copy = null
    if (this.owner) {
      this.owner = false
      try {
        await resetSession()
      } finally {
        release()
      }
    }
  }
}

let clients = 0
const server = net.createServer((socket) => new Client(socket, ++clients))
server.listen(Number(opts.port), opts.host, () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`)
})
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    server.close()
    await db.close().catch(() => {})
    process.exit(0)
  })
}
