package inspect

import (
	"math"
	"strconv"
)

// encodeFloat writes f as encoding/json does: the shortest decimal that
// reads back as f, in exponent form only for very small or large values.
func encodeFloat(f float64) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b := strconv.AppendFloat(nil, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

func parseFloat(b []byte) (float64, error) { return strconv.ParseFloat(string(b), 64) }
