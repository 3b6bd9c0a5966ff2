package merge

import (
	"strconv"
	"strings"
)

// layerIndex is a stand-in until config.LayerIndex lands.
func layerIndex(name string) (int, bool) {
	parts := strings.Split(name, ".")
	for i := 0; i+1 < len(parts); i++ {
		if parts[i] == "layers" || parts[i] == "h" || parts[i] == "blocks" {
			if n, err := strconv.Atoi(parts[i+1]); err == nil {
				return n, true
			}
		}
	}
	return 0, false
}

// l2Bytes is a stand-in until kernels.L2Bytes lands.
func l2Bytes() int { return 2 << 20 }
