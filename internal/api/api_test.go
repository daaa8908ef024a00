package api

import (
	"bytes"
	"encoding/json"
	"testing"
)

// TestWriteList: the list written an item at a time decodes to the list,
// an empty one to an empty array.
func TestWriteList(t *testing.T) {
	t.Parallel()
	for _, items := range [][]ClientStatus{{}, {{VIP: "web", MAC: "02:00:00:00:00:01"}, {VIP: "db", Owner: "h2"}}} {
		var b bytes.Buffer
		writeList(&b, items)
		var got []ClientStatus
		if err := json.Unmarshal(b.Bytes(), &got); err != nil || len(got) != len(items) || (len(got) > 0 && got[1].Owner != "h2") {
			t.Errorf("%q: decoded %+v, %v; want %+v", b.String(), got, err, items)
		}
	}
}
