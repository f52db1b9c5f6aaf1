package importer

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"
	"unicode/utf8"
)

// csvFile is what a first pass over a CSV file learns, before DuckDB parses it: its digest,
// delimiter and header, whether it is well-formed UTF-8 CSV, and where each data row starts
// (rows and lines differ after quoted line breaks and blank lines).
type csvFile struct {
	path   string
	sha256 string
	delim  byte
	header []string
	rows   int64
	shifts []lineShift // ascending by row
}

type lineShift struct {
	row   int64 // first data row (0-based) the shift applies to
	extra int   // lines beyond row+2 at which that row starts
}

// line returns the file line (1-based; the header is line 1) on which data row row starts.
func (f *csvFile) line(row int64) int {
	i := sort.Search(len(f.shifts), func(i int) bool { return f.shifts[i].row > row })
	extra := 0
	if i > 0 {
		extra = f.shifts[i-1].extra
	}
	return int(row) + 2 + extra
}

const bom = "\xef\xbb\xbf"

// scanCSV reads the file once. Structural problems (encoding, field counts, quotes) are added
// to ps; an I/O error is returned. progress is called with rows read so far.
func scanCSV(path string, ps *problems, progress func(rows int64)) (*csvFile, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer fh.Close()
	f := &csvFile{path: path}
	before := ps.total

	first, err := bufio.NewReader(fh).ReadString('\n')
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	first = trimLine(first)
	if first == "" || first == bom {
		ps.add(Problem{File: path, Line: 1, Found: "an empty file", Expected: "a header row naming the columns"})
		return f, nil
	}
	first = trimBOM(first)
	f.delim = sniffDelimiter(first)
	if !utf8.ValidString(first) {
		// Reported with its column by the full scan below.
	} else {
		r := csv.NewReader(bytes.NewReader([]byte(first)))
		r.Comma = rune(f.delim)
		r.LazyQuotes = true
		f.header, err = r.Read()
		if err != nil {
			ps.add(Problem{File: path, Line: 1, Found: "an unreadable header", Expected: "a header row of column names separated by , or ;"})
			return f, nil
		}
	}
	if _, err := fh.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	h := sha256.New()
	if err := f.scan(io.TeeReader(fh, h), len(f.header), ps, progress); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	f.sha256 = hex.EncodeToString(h.Sum(nil))
	if ps.total == before && f.rows == 0 {
		ps.add(Problem{File: path, Line: 2, Found: "a header and no rows", Expected: "at least one data row"})
	}
	return f, nil
}

func trimLine(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

func trimBOM(s string) string {
	if len(s) >= 3 && s[:3] == bom {
		return s[3:]
	}
	return s
}

// sniffDelimiter picks ; or , by which occurs more often outside quotes in the header.
func sniffDelimiter(header string) byte {
	var comma, semi int
	quoted := false
	for i := 0; i < len(header); i++ {
		switch header[i] {
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				comma++
			}
		case ';':
			if !quoted {
				semi++
			}
		}
	}
	if semi > comma {
		return ';'
	}
	return ','
}

// scan walks every byte once, as a CSV tokenizer that keeps no fields: it checks UTF-8,
// quoting and the number of fields per record, and records where rows start.
func (f *csvFile) scan(r io.Reader, want int, ps *problems, progress func(int64)) error {
	const chunk = 1 << 20
	buf := make([]byte, 0, chunk+8)
	var (
		line        = 1 // current line
		col         = 1 // current column (characters) on the line
		recordLine  = 1 // line where the current record started
		record      int64
		fields      = 1
		fieldStart  = true
		inQuote     = false
		afterQuote  = false // a closing quote was just seen
		blank       = true  // the current record has no bytes yet
		eof         = false
		start       = true
		badQuote    = false
		lastShift   = 0
		reportEvery = int64(1 << 16)
	)
	endRecord := func() {
		if blank && !inQuote {
			return // blank lines are skipped, as DuckDB does
		}
		if record == 0 {
			if want == 0 {
				want = fields
			}
		} else {
			row := record - 1
			if extra := recordLine - int(row) - 2; extra != lastShift {
				f.shifts = append(f.shifts, lineShift{row: row, extra: extra})
				lastShift = extra
			}
			if fields != want {
				ps.add(Problem{File: f.path, Line: recordLine, Found: fmt.Sprintf("%d fields", fields),
					Expected: fmt.Sprintf("%d fields, as in the header (delimiter %q)", want, f.delim)})
			}
			if badQuote {
				ps.add(Problem{File: f.path, Line: recordLine, Found: "a quote inside an unquoted field",
					Expected: `the whole field in quotes, with inner quotes doubled ("")`})
			}
			if progress != nil && record%reportEvery == 0 {
				progress(record)
			}
		}
		record++
		fields, fieldStart, blank, badQuote, afterQuote = 1, true, true, false, false
	}
	for !eof {
		n, err := io.ReadFull(r, buf[len(buf):cap(buf)-8])
		buf = buf[:len(buf)+n]
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			eof = true
		} else if err != nil {
			return err
		}
		if start {
			start = false
			if bytes.HasPrefix(buf, []byte(bom)) {
				buf = buf[3:]
			}
		}
		limit := len(buf)
		if !eof {
			limit -= 4 // keep room to look ahead at a multi-byte rune or a doubled quote
		}
		i := 0
		for ; i < limit; i++ {
			b := buf[i]
			if b >= utf8.RuneSelf {
				rn, size := utf8.DecodeRune(buf[i:])
				if rn == utf8.RuneError && size <= 1 {
					ps.add(Problem{File: f.path, Line: line, Column: fmt.Sprintf("column %d", col),
						Found:    fmt.Sprintf("byte 0x%02X, which is not UTF-8 (Latin-1 or Windows-1252 å, ä, ö?)", b),
						Expected: "UTF-8 text: save the file as UTF-8"})
					return nil
				}
				i += size - 1
				col++
				blank, fieldStart = false, false
				continue
			}
			col++
			if inQuote {
				switch b {
				case '"':
					if i+1 < len(buf) && buf[i+1] == '"' {
						i++
					} else {
						inQuote, afterQuote = false, true
					}
				case '\n':
					line++
					col = 1
				}
				continue
			}
			switch b {
			case '"':
				if fieldStart {
					inQuote = true
				} else {
					badQuote = true
				}
				blank, fieldStart = false, false
			case f.delim:
				fields++
				fieldStart, blank, afterQuote = true, false, false
			case '\n':
				endRecord()
				line++
				col = 1
				recordLine = line
			case '\r':
			default:
				if afterQuote {
					badQuote = true
				}
				blank, fieldStart = false, false
			}
		}
		buf = append(buf[:0], buf[i:]...)
	}
	if inQuote {
		ps.add(Problem{File: f.path, Line: recordLine, Found: "a quoted field that never ends (truncated file?)",
			Expected: "a closing quote"})
		return nil
	}
	endRecord()
	if record > 0 {
		f.rows = record - 1
	}
	if progress != nil {
		progress(f.rows)
	}
	return nil
}
