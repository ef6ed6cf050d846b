package audit

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

// Problem kinds that Verify reports.
const (
	Altered   = "altered"
	Removed   = "removed"
	Reordered = "reordered"
)

// VerifyError is the first problem Verify found.
type VerifyError struct {
	// Line is the 1-based line of the file at which the problem shows.
	Line int
	// Kind is Altered, Removed or Reordered.
	Kind string
	// Detail says what was found, in words.
	Detail string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("line %d: record %s: %s", e.Line, e.Kind, e.Detail)
}

// Summary describes a chain that verified.
type Summary struct {
	// Records is the number of records.
	Records int
	// LastSeq is the last record's seq, 0 when there is none.
	LastSeq uint64
	// Head is the last record's hash (the genesis value when there is
	// none): keep it elsewhere to detect later truncation.
	Head string
}

// Verify reads an audit file and checks its chain: every record's own hash,
// seq counting up from 1 and each prev equal to the previous hash. It
// returns a *VerifyError naming the first altered, removed or reordered
// record, or an I/O error.
func Verify(r io.Reader) (Summary, error) {
	var lines [][]byte
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		lines = append(lines, bytes.Clone(sc.Bytes()))
	}
	if err := sc.Err(); err != nil {
		return Summary{}, err
	}
	// seqs holds each line's seq for the look-ahead that tells a removal
	// from a reordering; 0 for a line that does not decode.
	seqs := make([]uint64, len(lines))
	recs := make([]*Record, len(lines))
	hashes := make([]string, len(lines))
	errs := make([]error, len(lines))
	for i, l := range lines {
		recs[i], hashes[i], errs[i] = decode(l)
		if recs[i] != nil {
			seqs[i] = recs[i].Seq
		}
	}
	prev, want := genesis, uint64(1)
	for i := range lines {
		n := i + 1
		if errs[i] != nil {
			return Summary{}, &VerifyError{Line: n, Kind: Altered, Detail: errs[i].Error()}
		}
		rec := recs[i]
		switch {
		case rec.Seq < want:
			return Summary{}, &VerifyError{Line: n, Kind: Reordered, Detail: fmt.Sprintf("seq %d comes after seq %d", rec.Seq, want-1)}
		case rec.Seq > want:
			for j := i + 1; j < len(lines); j++ {
				if seqs[j] == want {
					return Summary{}, &VerifyError{Line: n, Kind: Reordered, Detail: fmt.Sprintf("seq %d comes before seq %d (line %d)", rec.Seq, want, j+1)}
				}
			}
			detail := fmt.Sprintf("seq %d is missing before seq %d", want, rec.Seq)
			if rec.Seq > want+1 {
				detail = fmt.Sprintf("seqs %d to %d are missing before seq %d", want, rec.Seq-1, rec.Seq)
			}
			return Summary{}, &VerifyError{Line: n, Kind: Removed, Detail: detail}
		}
		if rec.Prev != prev {
			return Summary{}, &VerifyError{Line: n, Kind: Altered, Detail: "its prev does not match the hash of the record before it, which was replaced"}
		}
		prev, want = hashes[i], rec.Seq+1
	}
	return Summary{Records: len(lines), LastSeq: want - 1, Head: prev}, nil
}
