// grpc_go_client: latency of a unary CRI call through grpc-go, the gRPC
// stack of the kubelet and crictl, so that benches/pull_vs_containerd.sh
// measures both daemons through the client they really serve as well as
// through our tonic client. It needs no generated code: a raw-bytes codec
// sends a hand-encoded request and keeps the answer's bytes.
//
//	grpc_go_client -socket S -method status -image REF [-count N] [-warmup N]
//	grpc_go_client -socket S -method version [-count N]
//	grpc_go_client -socket S -method list [-count N]
//
// Prints one JSON line: p50/p90/p99/min in microseconds over -count calls
// made one after another on one connection, after -warmup untimed calls.
// The answer is received but not decoded: the figures are the daemon's work,
// the socket and grpc-go's framing (for list, "answer_bytes" tells its size).
// Builds with Debian's golang-go and golang-google-grpc-dev in GOPATH mode
// (GO111MODULE=off GOPATH=DIR:/usr/share/gocode); see the bench script.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
)

// rawCodec passes bytes through. It is registered under the name "proto"
// so that the content-type on the wire is the usual application/grpc.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	answer := v.(*[]byte)
	*answer = append((*answer)[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// lengthDelimited encodes protobuf field `number` (wire type 2) holding `payload`.
func lengthDelimited(number int, payload []byte) []byte {
	encoded := []byte{byte(number<<3 | 2)}
	length := len(payload)
	for length >= 0x80 {
		encoded = append(encoded, byte(length)|0x80)
		length >>= 7
	}
	encoded = append(encoded, byte(length))
	return append(encoded, payload...)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "grpc_go_client:", err)
	os.Exit(1)
}

func main() {
	socket := flag.String("socket", "", "the daemon's CRI socket")
	image := flag.String("image", "", "the image of ImageStatus (must be present)")
	method := flag.String("method", "status", "status (ImageStatus), list (ListImages, unfiltered) or version (RuntimeService Version)")
	count := flag.Int("count", 2000, "timed calls")
	warmup := flag.Int("warmup", 50, "untimed calls first")
	flag.Parse()
	encoding.RegisterCodec(rawCodec{})

	var path string
	var request []byte
	switch *method {
	case "status":
		// ImageStatusRequest{image: ImageSpec{image: REF}}
		path = "/runtime.v1.ImageService/ImageStatus"
		request = lengthDelimited(1, lengthDelimited(1, []byte(*image)))
	case "list":
		path = "/runtime.v1.ImageService/ListImages"
		request = []byte{}
	case "version":
		path = "/runtime.v1.RuntimeService/Version"
		request = []byte{}
	default:
		fail(fmt.Errorf("unknown -method %q", *method))
	}
	dialing, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	connection, err := grpc.DialContext(dialing, "unix://"+*socket, grpc.WithInsecure(), grpc.WithBlock(),
		// The kubelet's limit: grpc-go's default (4 MiB) holds a listing of
		// about 13,000 images (10,000 synthetic ones take 3.06 MB).
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16*1024*1024)),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", *socket)
		}))
	if err != nil {
		fail(err)
	}
	defer connection.Close()
	call := func() ([]byte, error) {
		var answer []byte
		err := connection.Invoke(context.Background(), path, &request, &answer)
		return answer, err
	}
	first, err := call()
	if err != nil {
		fail(err)
	}
	if *method == "status" && len(first) == 0 {
		fail(fmt.Errorf("image %s is not present: nothing to time", *image))
	}
	for i := 0; i < *warmup; i++ {
		if _, err := call(); err != nil {
			fail(err)
		}
	}
	latencies := make([]float64, 0, *count)
	for i := 0; i < *count; i++ {
		started := time.Now()
		if _, err := call(); err != nil {
			fail(err)
		}
		latencies = append(latencies, float64(time.Since(started).Nanoseconds())/1000)
	}
	sort.Float64s(latencies)
	// Nearest rank, as the Rust bench client does.
	at := func(fraction float64) float64 {
		rank := int(fraction*float64(len(latencies)) + 0.999999)
		if rank < 1 {
			rank = 1
		}
		return float64(int(latencies[rank-1]*10+0.5)) / 10
	}
	figures, _ := json.Marshal(map[string]interface{}{
		"method":       *method,
		"answer_bytes": len(first),
		"latency": map[string]interface{}{
			"count": len(latencies), "p50_us": at(0.50), "p90_us": at(0.90),
			"p99_us": at(0.99), "min_us": at(0),
		},
	})
	fmt.Println(string(figures))
}
