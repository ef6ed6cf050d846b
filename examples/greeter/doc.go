// Package greeter is the example greeter backend that `gatehouse demo` runs
// behind the gateway and that the end-to-end tests route to.
//
// Server implements greeterv1.GreeterServiceServer: SayHello answers with one
// greeting and names the instance that answered (served_by), so a demo with
// several instances shows load balancing; StreamHellos answers with a stream
// of greetings and stops as soon as the caller cancels.
//
// Both methods echo the inbound x-request-id metadata back as the response
// header x-request-id-seen, so a test can see what the gateway forwarded.
//
// NewGRPCServer assembles a ready *grpc.Server: the service, the standard
// health service (SERVING) and server reflection, behind protovalidate
// interceptors so the backend rejects invalid requests even when it is
// reached without the gateway.
package greeter
