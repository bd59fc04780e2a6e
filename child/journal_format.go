package child

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
)

// A journal segment is one file, written by one process only, appended
// to and never rewritten, possibly followed by zeros (preallocated space):
//
//	header  "BATONJ1\n"
//	record  length u32 | crc u32 | kind u8 | seq u64 | payload[length]
//	record  …
//
// Integers are little-endian. The CRC-32C covers kind, seq and payload,
// so a record cut short by a crash, or one whose bytes the disk never
// wrote, is told from a whole one. A data record carries one encoded item
// and its sequence number (increasing within a writer, across its
// segments); a done record says that every item of its writer up to seq
// has been flushed, so a replay can skip them.
const (
	segMagic     = "BATONJ1\n"
	recHeaderLen = 4 + 4 + 1 + 8
	// maxRecord bounds a record's payload: a length above it is garbage,
	// not an item to allocate for.
	maxRecord = 16 << 20

	recData byte = 1
	recDone byte = 2
)

// crcTable is made on first use, not when the package is initialised:
// building it takes 0.15 ms, and every program that links this package
// would pay that at each start (before it can serve), journal or not.
var crcTable = sync.OnceValue(func() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) })

// errNotSegment: the file does not start with the segment header.
var errNotSegment = errors.New("not a journal segment")

// record is one decoded record of a segment.
type record struct {
	kind    byte
	seq     uint64
	payload []byte // aliases the segment's bytes
}

// appendRecord appends the framed record to dst.
func appendRecord(dst []byte, kind byte, seq uint64, payload []byte) []byte {
	var h [recHeaderLen]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(len(payload)))
	h[8] = kind
	binary.LittleEndian.PutUint64(h[9:], seq)
	crc := crc32.Update(0, crcTable(), h[8:])
	crc = crc32.Update(crc, crcTable(), payload)
	binary.LittleEndian.PutUint32(h[4:], crc)
	dst = append(dst, h[:]...)
	return append(dst, payload...)
}

// parseSegment decodes a whole segment file. It returns the records up to
// the first one that is incomplete or fails its checksum, and end, the
// offset where those valid records end. Zeros after them are the unused
// part of a preallocated segment; anything else is a torn record, which
// the caller skips and reports with reason. A file
// shorter than the header that holds a prefix of it is an empty segment
// (its writer died while creating it); any other header is errNotSegment.
func parseSegment(b []byte) (recs []record, end int, reason string, err error) {
	if len(b) < len(segMagic) {
		if string(b) != segMagic[:len(b)] {
			return nil, 0, "", errNotSegment
		}
		return nil, len(b), "", nil
	}
	if string(b[:len(segMagic)]) != segMagic {
		return nil, 0, "", errNotSegment
	}
	off := len(segMagic)
	for off < len(b) {
		rest := b[off:]
		if allZero(rest) {
			return recs, off, "", nil // the unwritten part of a preallocated segment
		}
		if len(rest) < recHeaderLen {
			return recs, off, fmt.Sprintf("%d bytes, shorter than a record header", len(rest)), nil
		}
		n := binary.LittleEndian.Uint32(rest[0:])
		if n > maxRecord {
			return recs, off, fmt.Sprintf("length %d above the limit", n), nil
		}
		if uint64(len(rest)) < recHeaderLen+uint64(n) {
			return recs, off, fmt.Sprintf("length %d, only %d bytes left", n, len(rest)-recHeaderLen), nil
		}
		body := rest[8 : recHeaderLen+int(n)]
		if crc32.Checksum(body, crcTable()) != binary.LittleEndian.Uint32(rest[4:]) {
			return recs, off, "checksum mismatch", nil
		}
		kind := rest[8]
		if kind != recData && kind != recDone {
			return recs, off, fmt.Sprintf("unknown record kind %d", kind), nil
		}
		recs = append(recs, record{kind: kind, seq: binary.LittleEndian.Uint64(rest[9:]), payload: body[recHeaderLen-8:]})
		off += recHeaderLen + int(n)
	}
	return recs, off, "", nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
