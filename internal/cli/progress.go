package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/bangerdev/banger/api"
	"github.com/bangerdev/banger/internal/units"
)

// liveProgress redraws an operation's phase and per-item bars in place on
// a terminal.
type liveProgress struct {
	w     io.Writer
	lines int // lines drawn last time, to move back over
}

func (p *liveProgress) draw(op api.OperationSummary) {
	var b strings.Builder
	for range p.lines {
		b.WriteString("\033[1A\033[2K") // up one line, clear it
	}
	b.WriteString("\r\033[2K")
	lines := []string{fmt.Sprintf("%s %s: %s %s", op.Kind, op.Target, dash(op.Phase), formatProgress(op.Progress))}
	if op.Progress != nil {
		for _, it := range op.Progress.Items {
			lines = append(lines, fmt.Sprintf("  %-12s %s %s", it.Name, bar(it.Done, it.Total, 30), sizeOf(it.Done, it.Total)))
		}
	}
	b.WriteString(strings.Join(lines, "\n"))
	p.lines = len(lines) - 1
	fmt.Fprint(p.w, b.String())
}

// clear erases what draw drew.
func (p *liveProgress) clear() {
	var b strings.Builder
	for range p.lines {
		b.WriteString("\033[2K\033[1A")
	}
	b.WriteString("\r\033[2K")
	fmt.Fprint(p.w, b.String())
	p.lines = 0
}

func bar(done, total int64, width int) string {
	if total <= 0 {
		return "[" + strings.Repeat(" ", width) + "]"
	}
	n := int(float64(width) * float64(min(done, total)) / float64(total))
	if done >= total {
		return "[" + strings.Repeat("=", width) + "]"
	}
	return "[" + strings.Repeat("=", n) + ">" + strings.Repeat(" ", width-n-1) + "]"
}

func sizeOf(done, total int64) string {
	if done >= total && total > 0 {
		return units.FormatSize(total) + " done"
	}
	return units.FormatSize(done) + " / " + units.FormatSize(total)
}
