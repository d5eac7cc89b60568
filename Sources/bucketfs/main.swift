import BucketfsCLI
BucketfsCommand.main()
