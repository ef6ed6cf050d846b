package recovery_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gatehouse-dev/gatehouse/interceptors/internal/itest"
	"github.com/gatehouse-dev/gatehouse/interceptors/recovery"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRecovery(t *testing.T) {
	const secret = "db password is hunter2"
	tests := []struct {
		name     string
		stream   bool
		panicVal string // empty: no panic
		wantCode codes.Code
	}{
		{name: "unary ok", wantCode: codes.OK},
		{name: "unary panic", panicVal: secret, wantCode: codes.Internal},
		{name: "stream ok", stream: true, wantCode: codes.OK},
		{name: "stream panic", stream: true, panicVal: secret, wantCode: codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf syncBuffer
			logger := slog.New(slog.NewJSONHandler(&buf, nil))
			_, client := itest.ServeTestService(t,
				grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(recovery.WithLogger(logger))),
				grpc.ChainStreamInterceptor(recovery.StreamServerInterceptor(recovery.WithLogger(logger))),
			)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tt.panicVal != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, itest.PanicKey, tt.panicVal)
			}
			var err error
			if tt.stream {
				err = fullDuplexOnce(ctx, client)
			} else {
				_, err = client.UnaryCall(ctx, &testpb.SimpleRequest{})
			}
			st := status.Convert(err)
			if st.Code() != tt.wantCode {
				t.Fatalf("code = %v, want %v (err %v)", st.Code(), tt.wantCode, err)
			}
			logged := buf.String()
			if tt.panicVal == "" {
				if logged != "" {
					t.Errorf("logged %q for a call that did not panic", logged)
				}
				return
			}
			if st.Message() != recovery.Message {
				t.Errorf("message = %q, want %q", st.Message(), recovery.Message)
			}
			if strings.Contains(st.Message(), secret) || len(st.Details()) != 0 {
				t.Errorf("panic value leaked to the client: %v", st.Proto())
			}
			var line struct {
				Level  string `json:"level"`
				Method string `json:"grpc.method"`
				Panic  string `json:"panic"`
				Stack  string `json:"stack"`
			}
			if err := json.Unmarshal([]byte(logged), &line); err != nil {
				t.Fatalf("log %q: %v", logged, err)
			}
			wantMethod := "/grpc.testing.TestService/UnaryCall"
			if tt.stream {
				wantMethod = "/grpc.testing.TestService/FullDuplexCall"
			}
			if line.Level != "ERROR" || line.Method != wantMethod || line.Panic != secret {
				t.Errorf("log = %+v, want level ERROR, method %s, panic %q", line, wantMethod, secret)
			}
			if !strings.Contains(line.Stack, "itest.(*Service).enter") {
				t.Errorf("stack does not show the panicking frame:\n%s", line.Stack)
			}
		})
	}
}

func TestRecoveryDefaultLoggerDiscards(t *testing.T) {
	_, client := itest.ServeTestService(t,
		grpc.UnaryInterceptor(recovery.UnaryServerInterceptor(recovery.WithLogger(nil))),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, itest.PanicKey, "boom")
	_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
	if status.Code(err) != codes.Internal {
		t.Fatalf("err = %v, want Internal", err)
	}
}

func fullDuplexOnce(ctx context.Context, client testpb.TestServiceClient) error {
	stream, err := client.FullDuplexCall(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&testpb.StreamingOutputCallRequest{}); err != nil && err != io.EOF {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}
